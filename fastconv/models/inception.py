"""GoogLeNet (Inception v1) and Inception v3 on fastconv's convolutions.

Module names are torchvision's (``conv1``, ``inception3a`` … ``inception5b``, ``aux1``, ``aux2``,
``fc`` for GoogLeNet; ``Conv2d_1a_3x3`` … ``Mixed_7c``, ``AuxLogits``, ``fc`` for Inception v3;
``BasicConv2d`` blocks holding ``conv`` and ``bn``), so a torchvision ``state_dict`` loads with
``strict=True`` when both have the auxiliary classifiers (or both lack them), and pretrained
torchvision weights work unchanged.

As in torchvision, a model in training mode with ``aux_logits=True`` returns a named tuple with
the auxiliary classifiers' logits too; otherwise it returns the logits alone. The auxiliary
classifiers are not part of ``forward_features``.

References:
    - Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke, Rabinovich. *Going deeper
      with convolutions*. CVPR 2015.
    - Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. *Rethinking the Inception architecture for
      computer vision*. CVPR 2016.
"""
from collections import namedtuple
from typing import Any, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from fastconv.models._registry import register_model
from fastconv.nn import Conv2d

__all__ = ["BasicConv2d", "Inception", "InceptionAux", "GoogLeNet", "GoogLeNetOutputs",
           "InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE",
           "InceptionV3Aux", "Inception3", "InceptionOutputs", "googlenet", "inception_v3"]

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])
InceptionOutputs = namedtuple("InceptionOutputs", ["logits", "aux_logits"])


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, the TensorFlow value the pretrained
    weights were trained with) and ReLU.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        **kwargs: further arguments of :class:`fastconv.nn.Conv2d` (``kernel_size``, ``stride``,
            ``padding``, ...).

    Shape:
        input (Tensor[N, in_channels, H, W]) -> output (Tensor[N, out_channels, H', W']).
    """

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _trunc_normal_init(model: nn.Module, default_std: float) -> None:
    """Truncated-normal weights (at ±2, absolute) for convolutions and linear layers, with the
    standard deviation a module's ``init_std`` attribute (or its parent ``BasicConv2d``'s)
    gives, else ``default_std``; batch norms start as the identity."""
    for m in model.modules():
        if isinstance(m, BasicConv2d) and hasattr(m, "init_std"):
            m.conv.init_std = m.init_std
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            std = float(getattr(m, "init_std", default_std))
            nn.init.trunc_normal_(m.weight, mean=0.0, std=std, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _transform_input(x: Tensor) -> Tensor:
    """Map images normalised with ImageNet's mean and std to the [-1, 1] range that Google's
    pretrained weights expect (``(x_raw - 0.5) / 0.5``)."""
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    channels = [x[:, i:i + 1] * (std[i] / 0.5) + (mean[i] - 0.5) / 0.5 for i in range(3)]
    return torch.cat(channels, 1)


# ---------------------------------------------------------------------------------- GoogLeNet
class Inception(nn.Module):
    """GoogLeNet's Inception module (Fig. 2b of the paper): four parallel branches concatenated
    along the channels — a 1×1 convolution; 1×1 then 3×3; 1×1 then "5×5"; 3×3 max pooling then
    1×1.

    The "5×5" branch uses a 3×3 convolution, as torchvision's does (and its pretrained weights
    need); see pytorch/vision#906.

    Args:
        in_channels (int): input channels.
        ch1x1 (int): outputs of the 1×1 branch.
        ch3x3red (int), ch3x3 (int): reduction and outputs of the 3×3 branch.
        ch5x5red (int), ch5x5 (int): reduction and outputs of the "5×5" branch.
        pool_proj (int): outputs of the pooling branch's projection.

    Shape:
        input (Tensor[N, in_channels, H, W]) ->
        output (Tensor[N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W]).
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], 1)


class InceptionAux(nn.Module):
    """GoogLeNet's auxiliary classifier: average pooling to 4×4, a 1×1 convolution to 128
    channels, a fully-connected layer of 1024 with ReLU, dropout and the classifier.

    Args:
        in_channels (int): input channels.
        num_classes (int): outputs.
        dropout (float): dropout probability before the classifier. Default: 0.7.

    Shape:
        input (Tensor[N, in_channels, H, W]) -> output (Tensor[N, num_classes]).
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)
        return self.fc2(self.dropout(x))


class GoogLeNet(nn.Module):
    """GoogLeNet (Inception v1; Szegedy et al. 2015, Table 1) with batch norm after every
    convolution, as torchvision.models.GoogLeNet: a 7×7 stride-2 stem, 1×1 and 3×3
    convolutions, nine :class:`Inception` modules (3a, 3b, 4a–4e, 5a, 5b) with max pooling
    between the groups, global average pooling, dropout and ``fc``. Two auxiliary classifiers
    (``aux1`` after 4a, ``aux2`` after 4d) run in training mode.

    Every max pooling rounds up (``ceil_mode``), so any input of at least 15×15 works.

    Args:
        num_classes (int): outputs of ``fc`` and of the auxiliary classifiers. Default: 1000.
        aux_logits (bool): build the auxiliary classifiers. Default: True.
        transform_input (bool): re-normalise the input from ImageNet's mean and std to [-1, 1]
            first (what Google's pretrained weights expect). Default: False.
        init_weights (bool): truncated-normal weights (std 0.01), as torchvision; else torch's
            defaults. Default: True.
        dropout (float): dropout probability before ``fc``. Default: 0.2.
        dropout_aux (float): dropout probability in the auxiliary classifiers. Default: 0.7.

    Shape:
        input (Tensor[N, 3, H, W]) -> output (Tensor[N, num_classes]), or in training mode with
        ``aux_logits``: ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``, each
        Tensor[N, num_classes];
        ``forward_features``: Tensor[N, 1024, ceil(H / 32), ceil(W / 32)] (about; the poolings
        round up).
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True,
                 transform_input: bool = False, init_weights: bool = True,
                 dropout: float = 0.2, dropout_aux: float = 0.7) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input

        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        self.aux1: Optional[InceptionAux] = None
        self.aux2: Optional[InceptionAux] = None
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout=dropout_aux)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        if init_weights:
            _trunc_normal_init(self, default_std=0.01)

    def _features(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """The feature map and, in training mode, the two auxiliary classifiers' logits."""
        if self.transform_input:
            x = _transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return x, aux2, aux1

    def forward_features(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, 1024, H', W']: the output of ``inception5b``.
        """
        return self._features(x)[0]

    def _head(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))

    def forward(self, x: Tensor) -> Union[Tensor, GoogLeNetOutputs]:
        """Args:
            x (Tensor[N, 3, H, W]): the images.

        Returns:
            Tensor[N, num_classes]: the class scores (logits); in training mode with
            ``aux_logits``, ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``.
        """
        x, aux2, aux1 = self._features(x)
        logits = self._head(x)
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits


# ------------------------------------------------------------------------------- Inception v3
class InceptionA(nn.Module):
    """Inception v3's 35×35 module (Fig. 5 of the paper): 1×1; 1×1 then 5×5; 1×1 then two 3×3;
    3×3 average pooling then 1×1 — concatenated.

    Args:
        in_channels (int): input channels.
        pool_features (int): outputs of the pooling branch.

    Shape:
        input (Tensor[N, in_channels, H, W]) -> output (Tensor[N, 224 + pool_features, H, W]).
    """

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Inception v3's grid reduction 35→17 (Fig. 10 of the paper): a stride-2 3×3; 1×1, 3×3 and
    a stride-2 3×3; stride-2 3×3 max pooling — concatenated.

    Args:
        in_channels (int): input channels.

    Shape:
        input (Tensor[N, in_channels, H, W]) ->
        output (Tensor[N, 480 + in_channels, (H - 3) / 2 + 1, (W - 3) / 2 + 1]).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        b3d = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b3d, bp], 1)


class InceptionC(nn.Module):
    """Inception v3's 17×17 module with factorised 7×7 convolutions (Fig. 6 of the paper): 1×1;
    1×1, 1×7, 7×1; 1×1, 7×1, 1×7, 7×1, 1×7; 3×3 average pooling then 1×1 — concatenated.

    Args:
        in_channels (int): input channels.
        channels_7x7 (int): width inside the factorised branches.

    Shape:
        input (Tensor[N, in_channels, H, W]) -> output (Tensor[N, 768, H, W]).
    """

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            b7d = conv(b7d)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, b7d, bp], 1)


class InceptionD(nn.Module):
    """Inception v3's grid reduction 17→8: 1×1 then a stride-2 3×3; 1×1, 1×7, 7×1, stride-2
    3×3; stride-2 3×3 max pooling — concatenated.

    Args:
        in_channels (int): input channels.

    Shape:
        input (Tensor[N, in_channels, H, W]) ->
        output (Tensor[N, 512 + in_channels, (H - 3) / 2 + 1, (W - 3) / 2 + 1]).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """Inception v3's 8×8 module with expanded filter banks (Fig. 7 of the paper): 1×1; 1×1
    then parallel 1×3 and 3×1; 1×1, 3×3 then parallel 1×3 and 3×1; 3×3 average pooling then
    1×1 — concatenated.

    Args:
        in_channels (int): input channels.

    Shape:
        input (Tensor[N, in_channels, H, W]) -> output (Tensor[N, 2048, H, W]).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3d = torch.cat([self.branch3x3dbl_3a(b3d), self.branch3x3dbl_3b(b3d)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, b3d, bp], 1)


class InceptionV3Aux(nn.Module):
    """Inception v3's auxiliary classifier on the 17×17 grid: 5×5 stride-3 average pooling, a
    1×1 convolution to 128, a 5×5 convolution to 768, global average pooling and ``fc``
    (torchvision's ``InceptionAux`` of ``inception.py``).

    Args:
        in_channels (int): input channels.
        num_classes (int): outputs.

    Shape:
        input (Tensor[N, in_channels, H, W]) with H, W >= 17 (the 5×5 convolution needs a 5×5
        pooled map) -> output (Tensor[N, num_classes]).
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_channels, 128, kernel_size=1)
        self.conv1 = BasicConv2d(128, 768, kernel_size=5)
        self.conv1.init_std = 0.01
        self.fc = nn.Linear(768, num_classes)
        self.fc.init_std = 0.001

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, kernel_size=5, stride=3)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.fc(x)


class Inception3(nn.Module):
    """Inception v3 (Szegedy et al. 2016), as torchvision.models.Inception3: a stem of five
    convolutions and two max poolings (299 → 35), three :class:`InceptionA`, a reduction
    :class:`InceptionB` (→ 17), four :class:`InceptionC`, a reduction :class:`InceptionD`
    (→ 8), two :class:`InceptionE`, global average pooling, dropout and ``fc``. The auxiliary
    classifier ``AuxLogits`` reads the output of ``Mixed_6e`` in training mode.

    The unpadded stem and reductions need an input of at least 75×75; the auxiliary classifier
    (training mode with ``aux_logits``) needs 299×299, where ``Mixed_6e`` gives it 17×17.

    Args:
        num_classes (int): outputs of ``fc`` and ``AuxLogits``. Default: 1000.
        aux_logits (bool): build the auxiliary classifier. Default: True.
        transform_input (bool): re-normalise the input from ImageNet's mean and std to [-1, 1]
            first (what Google's pretrained weights expect). Default: False.
        init_weights (bool): truncated-normal weights (std 0.1; 0.01 and 0.001 in the
            auxiliary classifier's 5×5 convolution and ``fc``); else torch's defaults.
            Default: True.
        dropout (float): dropout probability before ``fc``. Default: 0.5.

    Shape:
        input (Tensor[N, 3, H, W]) with H, W >= 75 -> output (Tensor[N, num_classes]), or in
        training mode with ``aux_logits`` (H, W >= 299): ``InceptionOutputs(logits,
        aux_logits)``;
        ``forward_features``: Tensor[N, 2048, H', W'] (8×8 at 299).
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True,
                 transform_input: bool = False, init_weights: bool = True,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input

        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.AuxLogits: Optional[InceptionV3Aux] = None
        if aux_logits:
            self.AuxLogits = InceptionV3Aux(768, num_classes)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)

        if init_weights:
            _trunc_normal_init(self, default_std=0.1)

    def _features(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """The feature map and, in training mode, the auxiliary classifier's logits."""
        if self.transform_input:
            x = _transform_input(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.maxpool1(x)
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return x, aux

    def forward_features(self, x: Tensor) -> Tensor:
        """Args:
            x (Tensor[N, 3, H, W]): the images, H, W >= 75.

        Returns:
            Tensor[N, 2048, H', W']: the output of ``Mixed_7c``.
        """
        return self._features(x)[0]

    def _head(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.dropout(self.avgpool(x)), 1)
        return self.fc(x)

    def forward(self, x: Tensor) -> Union[Tensor, InceptionOutputs]:
        """Args:
            x (Tensor[N, 3, H, W]): the images, H, W >= 75.

        Returns:
            Tensor[N, num_classes]: the class scores (logits); in training mode with
            ``aux_logits``, ``InceptionOutputs(logits, aux_logits)``.
        """
        x, aux = self._features(x)
        logits = self._head(x)
        if self.training and self.aux_logits:
            return InceptionOutputs(logits, aux)
        return logits


@register_model()
def googlenet(*, num_classes: int = 1000, **kwargs: Any) -> GoogLeNet:
    """GoogLeNet (Inception v1), as ``torchvision.models.googlenet`` (6.6 M parameters without the
    auxiliary classifiers at 1000 classes, 13.0 M with them).

    Args:
        num_classes (int): outputs of the classifiers.
        **kwargs: further arguments of :class:`GoogLeNet` (``aux_logits``,
            ``transform_input``, ``dropout``, ...).
    """
    return GoogLeNet(num_classes=num_classes, **kwargs)


@register_model()
def inception_v3(*, num_classes: int = 1000, **kwargs: Any) -> Inception3:
    """Inception v3, as ``torchvision.models.inception_v3`` (27.2 M parameters with the
    auxiliary classifier at 1000 classes).

    Args:
        num_classes (int): outputs of the classifiers.
        **kwargs: further arguments of :class:`Inception3` (``aux_logits``,
            ``transform_input``, ``dropout``, ...).
    """
    return Inception3(num_classes=num_classes, **kwargs)
