"""Vision: vit-small, a small Vision Transformer (``model``) on Fashion-MNIST or CIFAR-10, read
from disk by ``images``."""

from bench_cli.tasks.vision.images import (
    CIFAR10_NAME,
    FASHION_MNIST,
    SYSTEM_FASHION_MNIST,
    cifar10_source,
    read_cifar10,
    read_fashion_mnist,
    read_idx,
)
from bench_cli.tasks.vision.model import ViT
from bench_cli.tasks.vision.task import (
    DATASETS,
    VisionOptions,
    ViTSmall,
    crop_flip,
    epoch_orders,
    fashion_mnist_files,
)

__all__ = [
    "CIFAR10_NAME",
    "DATASETS",
    "FASHION_MNIST",
    "SYSTEM_FASHION_MNIST",
    "ViT",
    "ViTSmall",
    "VisionOptions",
    "cifar10_source",
    "crop_flip",
    "epoch_orders",
    "fashion_mnist_files",
    "read_cifar10",
    "read_fashion_mnist",
    "read_idx",
]
