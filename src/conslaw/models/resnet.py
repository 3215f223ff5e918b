"""CIFAR ResNets (He et al. 2016): BasicBlocks, 3x3 stem, no max-pool; with or without BatchNorm.

``resnet18_cifar()`` is the ResNet-18 of the paper's Figure 1 (11.2M parameters).
"""

from __future__ import annotations

from torch import nn


def norm_layer(channels: int, batchnorm: bool) -> nn.Module:
    """3x3 convolution with padding 1 (bias only without BatchNorm)."""
    return nn.BatchNorm2d(channels) if batchnorm else nn.Identity()


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the (projected) input, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, batchnorm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not batchnorm)
        self.bn1 = norm_layer(cout, batchnorm)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not batchnorm)
        self.bn2 = norm_layer(cout, batchnorm)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=not batchnorm),
                                          norm_layer(cout, batchnorm))

    def forward(self, x):
        """relu(bn2(conv2(relu(bn1(conv1 x))))) + shortcut(x), then relu."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, stages of BasicBlocks, global average pooling, linear head."""
    def __init__(self, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), classes: int = 10,
                 batchnorm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=not batchnorm)
        self.bn1 = norm_layer(widths[0], batchnorm)
        self.relu = nn.ReLU()
        layers, cin = [], widths[0]
        for stage, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if stage == 0 else 2
            stage_blocks = []
            for b in range(count):
                stage_blocks.append(BasicBlock(cin, width, stride if b == 0 else 1, batchnorm))
                cin = width
            layers.append(nn.Sequential(*stage_blocks))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        """Logits of a batch of images (N, 3, H, W)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def resnet18_cifar(classes: int = 10, width: int = 64, batchnorm: bool = True) -> CifarResNet:
    """ResNet-18 for 32x32 inputs; ``width`` scales every stage (64 is the standard model)."""
    return CifarResNet((2, 2, 2, 2), (width, 2 * width, 4 * width, 8 * width), classes, batchnorm)
