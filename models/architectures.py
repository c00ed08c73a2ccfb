"""Backbones of the zoo as flat functional Keras models (inputs in [0, 1], 4-way softmax).

Each model is `keras.Model(inputs, head(backbone(preprocess(inputs))))` built in one
graph, so the last convolutional layer stays reachable for Grad-CAM.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from core.labels import N_CLASSES

HEAD_POOL = "head_pool"

# How each ImageNet backbone expects its pixels; inputs to our models are always [0, 1].
PREPROCESS_MODE = {
    "vgg19": "caffe",
    "resnet152": "caffe",
    "seresnet152": "caffe",
    "inceptionv3": "tf",
    "mobilenetv2": "tf",
    "xception": "tf",
    "densenet121": "torch",
    "densenet201": "torch",
    "efficientnetb7": "raw255",  # EfficientNet rescales and normalises inside the model
}


@keras.saving.register_keras_serializable(package="leukoscope")
class ImageNetPreprocess(layers.Layer):
    """Maps [0, 1] RGB to the pixel convention the ImageNet weights were trained with."""

    _MEAN = {"torch": (0.485, 0.456, 0.406), "caffe": (103.939, 116.779, 123.68)}
    _STD = (0.229, 0.224, 0.225)

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, x):
        if self.mode == "tf":
            return x * 2.0 - 1.0
        if self.mode == "torch":
            return (x - ops.array(self._MEAN["torch"])) / ops.array(self._STD)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) * 255.0 - ops.array(self._MEAN["caffe"])
        if self.mode == "raw255":
            return x * 255.0
        raise ValueError(f"unknown preprocessing mode {self.mode!r}")

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


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


def build_classifier(
    arch: str,
    input_size: int,
    imagenet: bool,
    freeze_backbone: bool = False,
    fine_tune_layers: int = 0,
    dropout: float = 0.2,
    name: str | None = None,
) -> keras.Model:
    """A flat model: (B, S, S, 3) float in [0, 1] -> (B, 4) class probabilities.

    `imagenet=True` goes through keras.applications' real `weights="imagenet"` path
    (Keras reads `$KERAS_HOME/models` before it tries to download).
    `freeze_backbone` is the paper's feature extraction; `fine_tune_layers` then
    unfreezes that many top backbone layers (BatchNorm stays frozen).
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = ImageNetPreprocess(PREPROCESS_MODE[arch], name="preprocess")(inputs)
    if arch == "seresnet152":
        if imagenet:
            raise ValueError("SE-ResNet152 has no ImageNet weights in Keras; its TL variant is ResNet152.")
        features = se_resnet152(x)
        backbone_layers = None
    else:
        base = _applications_backbone(arch)(
            include_top=False, weights="imagenet" if imagenet else None, input_tensor=x
        )
        features = base.output
        backbone_layers = base.layers
    h = layers.GlobalAveragePooling2D(name=HEAD_POOL)(features)
    h = layers.Dropout(dropout, name="head_dropout")(h)
    h = layers.Dense(N_CLASSES, name="logits")(h)
    outputs = layers.Activation("softmax", name="probabilities", dtype="float32")(h)
    model = keras.Model(inputs, outputs, name=name or arch)
    if not imagenet:
        # From scratch on ~1,700 images an epoch is ~100 steps: MobileNetV2's BatchNorm
        # momentum of 0.999 leaves the moving statistics (used at validation) far behind.
        for layer in model.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = min(layer.momentum, 0.9)
    if freeze_backbone and backbone_layers is not None:
        for layer in backbone_layers:
            layer.trainable = False
        if fine_tune_layers:
            for layer in backbone_layers[-fine_tune_layers:]:
                if not isinstance(layer, layers.BatchNormalization):
                    layer.trainable = True
    return model


def feature_layer_name(model: keras.Model) -> str:
    """Name of the last convolutional feature map (the input of the head's pooling)."""
    names = [layer.name for layer in model.layers]
    return names[names.index(HEAD_POOL) - 1]
