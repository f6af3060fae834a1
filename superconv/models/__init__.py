"""Model registry: `create_model(name, num_classes=..., **kwargs)`.

Every model takes NHWC float images and returns float32 logits [B, num_classes]. The paper's
networks are Flax Linen modules called as `model.apply(variables, x, train=bool, ...)`; NNX
models (`NNX_MODELS`) are returned as an `NnxSpec` to build (docs/architecture.md).

Names (see `MODELS`; depth patterns are parsed by `create_model`):

  resnet{6n+2}            the paper's Caffe ResNet (resnet20 / resnet56 / resnet110)
  resnet{6n+2}_a          He et al. option-A CIFAR ResNet
  wide_resnet{6n+2}       Smith 2018's wide ResNet-32 (widths 16/64/256)
  bottleneck_resnet{9n+2} pre-activation bottleneck ResNet-56 (bottleneckResnet56.prototxt)
  resnext{9n+2}           ResNeXt-56 (ResNeXt56.prototxt: 3x3 convs with 32 groups)
  densenet{3n+4}          DenseNet-40, growth 12
  lenet                   Caffe MNIST LeNet
  nnx_lenet               LeNet's layers in Flax NNX with BN and dropout (an NNX example)
  resnet50, inception_resnet_v2             ImageNet models
  resnet_imagenet_tiny, inception_resnet_tiny  smoke-test versions of those (32x32 inputs work)
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable

import flax.linen as nn

from superconv.models import densenet
from superconv.models import imagenet
from superconv.models import layers
from superconv.models import lenet
from superconv.models import nnx_models
from superconv.models import resnet_cifar
from superconv.models.layers import param_count

__all__ = ['MODELS', 'NNX_MODELS', 'create_model', 'param_count', 'layers', 'smallest']

_RESNEXT = dict(mids=(32, 64, 128), outs=(64, 128, 256), groups=32)

# Depth-parameterised families: regex on the name -> constructor of the depth, and the family's
# smallest member (what the `smoke` and `tiny` config variants build, see `smallest`).
_FAMILIES: tuple[tuple[str, Callable[[int], Callable[..., nn.Module]], str], ...] = (
    (r'resnet(\d+)', lambda d: functools.partial(resnet_cifar.CaffeResNet, depth=d), 'resnet8'),
    (r'resnet(\d+)_a', lambda d: functools.partial(resnet_cifar.ResNetA, depth=d), 'resnet8_a'),
    (r'wide_resnet(\d+)', lambda d: functools.partial(resnet_cifar.WideResNet, depth=d),
     'wide_resnet8'),
    (r'bottleneck_resnet(\d+)',
     lambda d: functools.partial(resnet_cifar.BottleneckResNet, depth=d), 'bottleneck_resnet11'),
    (r'resnext(\d+)', lambda d: functools.partial(resnet_cifar.BottleneckResNet, depth=d,
                                                  **_RESNEXT), 'resnext11'),
    (r'densenet(\d+)', lambda d: functools.partial(densenet.DenseNet, depth=d), 'densenet10'),
)
# The small stand-in of each named ImageNet model (same structure, 32x32 inputs work).
_SMALLEST_NAMED = {'resnet50': 'resnet_imagenet_tiny',
                   'inception_resnet_v2': 'inception_resnet_tiny'}


def _family(name: str) -> Callable[..., nn.Module] | None:
  for pattern, make, _ in _FAMILIES:
    match = re.fullmatch(pattern, name)
    if match:
      return make(int(match.group(1)))
  return None


def smallest(name: str) -> str:
  """The smallest model of `name`'s family: fast to compile and run on a 2-core CPU.

  A name of no family (e.g. 'lenet', or an unknown one that `create_model` will report) is
  returned unchanged.

  Examples:
    >>> smallest('resnet110'), smallest('resnext56'), smallest('resnet50'), smallest('lenet')
    ('resnet8', 'resnext11', 'resnet_imagenet_tiny', 'lenet')
  """
  if name in _SMALLEST_NAMED:
    return _SMALLEST_NAMED[name]
  for pattern, _, small in _FAMILIES:
    if re.fullmatch(pattern, name):
      return small
  return name


# Named models: the paper's networks plus the smallest member of each family (smoke tests).
MODELS: dict[str, Callable[..., nn.Module]] = {
    name: _family(name) for name in (
        'resnet20', 'resnet56', 'resnet110', 'resnet8',
        'resnet20_a', 'resnet56_a', 'resnet110_a', 'resnet8_a',
        'wide_resnet32', 'wide_resnet8',
        'bottleneck_resnet56', 'bottleneck_resnet11',
        'resnext56', 'resnext11',
        'densenet40', 'densenet10',
    )
}
MODELS.update({
    'lenet': lenet.LeNet,
    'resnet50': imagenet.ResNet50,
    'inception_resnet_v2': imagenet.InceptionResNetV2,
    # ResNet-50 structure, 1 block per stage, widths 8/16/32/64 (x4): 32x32 inputs -> 1x1.
    'resnet_imagenet_tiny': functools.partial(imagenet.ResNet50, stage_sizes=(1, 1, 1, 1),
                                              base_width=8),
    # Inception-ResNet-v2 structure, 1 block of each kind, widths / 16, 'SAME' padding so any
    # input from 32x32 up works (32x32 -> 1x1 before the head).
    'inception_resnet_tiny': functools.partial(imagenet.InceptionResNetV2, repeats=(1, 1, 1),
                                               width_mult=1 / 16, valid_padding=False),
})


# Flax NNX models: (class, the registry options it takes). Built by the trainer from the run's
# key and the input shape (`superconv.model_adapter`).
NNX_MODELS: dict[str, tuple[type, tuple[str, ...]]] = {
    'nnx_lenet': (nnx_models.NnxLeNet, ('dropout_rate',)),
}


def _fields(ctor: Callable[..., nn.Module]) -> set[str]:
  cls = ctor.func if isinstance(ctor, functools.partial) else ctor
  return {f.name for f in dataclasses.fields(cls)}


def create_model(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the registered model `name` (or a depth of a family, e.g. 'resnet32').

  Args:
    name: a key of `MODELS` or a family pattern ('resnet{6n+2}', 'resnet{6n+2}_a',
      'wide_resnet{6n+2}', 'bottleneck_resnet{9n+2}', 'resnext{9n+2}', 'densenet{3n+4}').
    num_classes: output classes.
    **kwargs: dtype ('float32' | 'bfloat16' or a jnp dtype), bn_momentum, bn_epsilon,
      virtual_batch_size, dropout_rate, or any other attribute of the model class. Options the
      model does not have (e.g. BN settings for LeNet) are ignored.

  Returns:
    The (unbound) Flax Linen module, or for an NNX model (`NNX_MODELS`) its `NnxSpec`.

  Raises:
    ValueError: unknown name (the message lists the valid ones) or a depth the family does not
      allow.

  Examples:
    >>> model = create_model('resnet20', num_classes=10, dtype='bfloat16', bn_momentum=0.95)
    >>> type(model).__name__, model.depth, model.bn_momentum
    ('CaffeResNet', 20, 0.95)
  """
  if name in NNX_MODELS:
    cls, accepted = NNX_MODELS[name]
    return nnx_models.NnxSpec(cls, (('num_classes', num_classes),) + tuple(
        (k, v) for k, v in sorted(kwargs.items()) if k in accepted))
  ctor = MODELS.get(name) or _family(name)
  if ctor is None:
    patterns = ', '.join(p.replace(r'(\d+)', '{depth}') for p, _, _ in _FAMILIES)
    names = ', '.join(sorted([*MODELS, *NNX_MODELS]))
    raise ValueError(f'unknown model {name!r}; valid names: {names} '
                     f'(and the depth patterns {patterns})')
  if 'dtype' in kwargs:
    kwargs['dtype'] = layers.as_dtype(kwargs['dtype'])
  accepted = _fields(ctor)
  model = ctor(num_classes=num_classes, **{k: v for k, v in kwargs.items() if k in accepted})
  _check_depth(model)
  return model


def _check_depth(model: nn.Module) -> None:
  """Fails at construction (not at first call) for a depth the family does not allow."""
  if isinstance(model, densenet.DenseNet):
    if (model.depth - 4) % 3 or model.depth < 7:
      raise ValueError(f'DenseNet depth must be 3n+4 with n >= 1, got {model.depth}')
  elif isinstance(model, resnet_cifar.BottleneckResNet):
    resnet_cifar.blocks_per_stage(model.depth, 3, 'BottleneckResNet')
  elif isinstance(model, (resnet_cifar.CaffeResNet, resnet_cifar.ResNetA,
                          resnet_cifar.WideResNet)):
    resnet_cifar.blocks_per_stage(model.depth, 2, type(model).__name__)
