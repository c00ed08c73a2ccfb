"""EfficientNet-Lite0/1/2 (Tan & Le; TF-Lite variants) built flat in the Keras functional API.

The Lite variants drop squeeze-and-excitation, use ReLU6, and keep the stem (32) and head
(1280) widths and the first and last stages' depths unscaled. Layer shapes and names are
the contract `models.convert` maps the PyTorch checkpoints onto (`TORCH_KEYS`).
Stride-2 convolutions pad explicitly, TensorFlow-"SAME" style (the extra row and column go
bottom/right), which is what the checkpoints were trained with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

# (repeats, kernel, stride, expand ratio, input filters, output filters) of EfficientNet-Lite0.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
DROP_CONNECT = 0.2
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int  # the ImageNet training resolution
    dropout: float


VARIANTS = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, 0.3),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


@dataclass(frozen=True)
class BlockCfg:
    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


def block_configs(variant: str) -> list[BlockCfg]:
    """Every MBConv block of a variant, in order (the checkpoints' `_blocks.N`)."""
    v = VARIANTS[variant]
    out: list[BlockCfg] = []
    last = len(_STAGES) - 1
    for stage, (repeats, k, s, e, f_in, f_out) in enumerate(_STAGES):
        f_in = STEM_FILTERS if stage == 0 else _round_filters(f_in, v.width)
        f_out = _round_filters(f_out, v.width)
        if stage not in (0, last):
            repeats = int(math.ceil(v.depth * repeats))
        for r in range(repeats):
            out.append(BlockCfg(len(out), k, s if r == 0 else 1, e, f_in if r == 0 else f_out, f_out))
    return out


def _same_pad(x, kernel: int, stride: int, name: str):
    """Explicit TF-"SAME" zero padding for a strided convolution on a known input size."""
    pads = []
    for size in x.shape[1:3]:
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return layers.ZeroPadding2D(tuple(pads), name=name)(x)


def _conv(x, filters: int, kernel: int, stride: int, name: str):
    if stride > 1:
        x = _same_pad(x, kernel, stride, f"{name}_pad")
    return layers.Conv2D(filters, kernel, strides=stride, padding="valid" if stride > 1 else "same",
                         use_bias=False, name=name)(x)


def _bn(x, name: str):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _relu6(x, name: str):
    return layers.ReLU(max_value=6.0, name=name)(x)


def efficientnet_lite(x, variant: str):
    """The backbone on an already-normalised image tensor; returns the last feature map
    (`top_relu6`, HEAD_FILTERS channels)."""
    x = _conv(x, STEM_FILTERS, 3, 2, "stem_conv")
    x = _relu6(_bn(x, "stem_bn"), "stem_relu6")
    blocks = block_configs(variant)
    for b in blocks:
        p = f"block{b.index}"
        inputs = x
        mid = b.filters_in * b.expand
        if b.expand != 1:
            x = layers.Conv2D(mid, 1, use_bias=False, name=f"{p}_expand_conv")(x)
            x = _relu6(_bn(x, f"{p}_expand_bn"), f"{p}_expand_relu6")
        if b.stride > 1:
            x = _same_pad(x, b.kernel, b.stride, f"{p}_dw_pad")
        x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="valid" if b.stride > 1 else "same",
                                   use_bias=False, name=f"{p}_dwconv")(x)
        x = _relu6(_bn(x, f"{p}_dw_bn"), f"{p}_dw_relu6")
        x = layers.Conv2D(b.filters_out, 1, use_bias=False, name=f"{p}_project_conv")(x)
        x = _bn(x, f"{p}_project_bn")
        if b.stride == 1 and b.filters_in == b.filters_out:
            rate = DROP_CONNECT * b.index / len(blocks)
            if rate > 0:  # stochastic depth, as in the original training
                x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{p}_drop")(x)
            x = layers.Add(name=f"{p}_add")([x, inputs])
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="top_conv")(x)
    return _relu6(_bn(x, "top_bn"), "top_relu6")


IMAGENET_LOGITS = "imagenet_logits"


def torch_keys(variant: str) -> dict[str, tuple[str, str]]:
    """Checkpoint key -> (Keras layer name, Keras variable) for every float tensor of the
    ImageNet classifier; the converter requires this to be a bijection."""
    keys: dict[str, tuple[str, str]] = {}

    def conv(torch_prefix: str, layer: str) -> None:
        keys[f"{torch_prefix}.weight"] = (layer, "kernel")

    def bn(torch_prefix: str, layer: str) -> None:
        for t, k in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                     ("running_var", "moving_variance")):
            keys[f"{torch_prefix}.{t}"] = (layer, k)

    conv("_conv_stem", "stem_conv")
    bn("_bn0", "stem_bn")
    for b in block_configs(variant):
        t, p = f"_blocks.{b.index}", f"block{b.index}"
        if b.expand != 1:
            conv(f"{t}._expand_conv", f"{p}_expand_conv")
            bn(f"{t}._bn0", f"{p}_expand_bn")
        conv(f"{t}._depthwise_conv", f"{p}_dwconv")
        bn(f"{t}._bn1", f"{p}_dw_bn")
        conv(f"{t}._project_conv", f"{p}_project_conv")
        bn(f"{t}._bn2", f"{p}_project_bn")
    conv("_conv_head", "top_conv")
    bn("_bn1", "top_bn")
    keys["_fc.weight"] = (IMAGENET_LOGITS, "kernel")
    keys["_fc.bias"] = (IMAGENET_LOGITS, "bias")
    return keys


def imagenet_classifier(variant: str, normalize: layers.Layer, input_size: int | None = None) -> keras.Model:
    """The original 1000-class ImageNet network (inputs RGB in [0, 1]; outputs logits):
    what the converted checkpoint is stored as, and how the port is checked."""
    v = VARIANTS[variant]
    size = input_size or v.resolution
    inputs = keras.Input((size, size, 3), name="image")
    x = efficientnet_lite(normalize(inputs), variant)
    x = layers.GlobalAveragePooling2D(name="imagenet_pool")(x)
    outputs = layers.Dense(1000, name=IMAGENET_LOGITS)(x)
    return keras.Model(inputs, outputs, name=f"{variant}_imagenet")
