"""PyTorch side of radsight-vision's parity tests (crates/vision/tests/vision/parity.rs).

    python tests/python/torch_parity.py ARCH OUT_DIR [--export-only]

ARCH is densenet121, efficientnet_b0, resnet50 or basic_unet. Builds the torchvision (or
MONAI) model with its own random initialisation under a fixed seed (no pretrained weights can
be downloaded), gives every norm layer random statistics and affine parameters (so folding
them is exercised), exports the weights with scripts/export_torch.py, writes the import
description, and computes on 5 seeded inputs (BatchNorm running statistics are then set from 8 other seeded inputs, as
training would leave them): logits (or per-pixel logits and the argmax
mask), pytorch-grad-cam 1.5.7's Grad-CAM on the architecture's target layer, and for
classifiers pytorch-grad-cam's ROAD scores (most- and least-relevant first, percentiles
10..90) on the first two images with their Grad-CAM maps. Everything the Rust side compares
goes to OUT_DIR/reference.safetensors.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from export_torch import export  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

SEED = 20261202
XRV_LABELS = ["Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
              "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
              "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum"]
# SNOMED CT codes where one exists (informational in the card).
SNOMED = {"Atelectasis": ("46621007", "Atelectasis"), "Pneumothorax": ("36118008", "Pneumothorax"),
          "Cardiomegaly": ("8186001", "Cardiomegaly"), "Nodule": ("427359005", "Solitary nodule of lung")}
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


class Preprocess(torch.nn.Module):
    """[0, 1] pixels -> the model's input, written the way the model's owner would: map to the
    intensity range, then standardise."""

    def __init__(self, lo, hi, mean, std):
        super().__init__()
        self.lo, self.hi = lo, hi
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return ((self.lo + x * (self.hi - self.lo)) - self.mean) / self.std


def randomise_norms(model, gen):
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)):
            with torch.no_grad():
                if m.weight is not None:
                    m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                    m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def calibrate_batch_norm(full, size, ch):
    """Running statistics from 8 seeded images (cumulative average), as training would leave
    them: random initialisation alone gives activations (and logits) in the thousands on
    TorchXRayVision's [-1024, 1024] input, where float32 cannot resolve 1e-4."""
    bns = [m for m in full.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if not bns:
        return
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    full.train()
    g = torch.Generator().manual_seed(SEED + 4)
    with torch.no_grad():
        full(inputs(size, 8, g).repeat(1, ch, 1, 1))
    full.eval()


def build(arch):
    import torchvision
    torch.manual_seed(SEED)
    if arch == "densenet121":
        m = torchvision.models.densenet121(num_classes=len(XRV_LABELS))
        # TorchXRayVision's DenseNet takes one channel.
        m.features.conv0 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        torch.nn.init.kaiming_normal_(m.features.conv0.weight)
        labels, size, ch = XRV_LABELS, 224, 1
        pre = dict(intensity_range=[-1024.0, 1024.0], mean=[0.0], std=[1.0])
        layer = lambda mm: mm.features.norm5  # noqa: E731
    elif arch == "efficientnet_b0":
        m = torchvision.models.efficientnet_b0(num_classes=3)
        labels, size, ch = ["finding-a", "finding-b", "finding-c"], 224, 3
        pre = dict(intensity_range=[0.0, 1.0], mean=IMAGENET[0], std=IMAGENET[1])
        layer = lambda mm: mm.features[-1]  # noqa: E731
    elif arch == "resnet50":
        m = torchvision.models.resnet50(num_classes=2)
        labels, size, ch = ["finding-a", "finding-b"], 224, 3
        pre = dict(intensity_range=[0.0, 1.0], mean=IMAGENET[0], std=IMAGENET[1])
        layer = lambda mm: mm.layer4  # noqa: E731
    elif arch == "basic_unet":
        from monai.networks.nets import BasicUNet
        m = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3)
        labels, size, ch = ["lesion-a", "lesion-b"], 96, 1
        pre = dict(intensity_range=[0.0, 1.0], mean=[0.5], std=[0.25])
        layer = lambda mm: mm.upcat_1  # noqa: E731
    else:
        raise SystemExit(f"unknown architecture {arch}")
    gen = torch.Generator().manual_seed(SEED + 1)
    randomise_norms(m, gen)
    if arch == "basic_unet":
        # Random init gives near-constant logits; a larger final layer makes the argmax non-trivial.
        with torch.no_grad():
            m.final_conv.weight.mul_(8.0)
            m.final_conv.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    m.eval()
    return m, labels, size, ch, pre, layer


def inputs(size, n=5, g=None):
    """Smooth random images in [0, 1] (coarse noise upsampled, plus fine noise and a bright blob)."""
    g = g or torch.Generator().manual_seed(SEED + 2)
    coarse = torch.rand(n, 1, 7, 7, generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        cy, cx = torch.randint(size // 4, 3 * size // 4, (2,), generator=g).tolist()
        r = size / 10
        x[i, 0] += 0.6 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    x += 0.05 * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def toml_str(v):
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def description(arch, labels, size, ch, pre):
    lines = [f'id = "parity-{arch.replace("_", "-")}"', 'version = "1.0.0"',
             f"name = {toml_str('parity test ' + arch)}", f"architecture = {toml_str(arch)}",
             'training_data = "torchvision / MONAI random initialisation, seed %d"' % SEED,
             "[input]", f"size = {size}", f"channels = {ch}", 'resize = "letterbox"',
             f"intensity_range = {pre['intensity_range']}", f"mean = {pre['mean']}", f"std = {pre['std']}"]
    for name in labels:
        lines += ["[[labels]]", f"name = {toml_str(name)}", "threshold = 0.5"]
        if name in SNOMED:
            code, display = SNOMED[name]
            lines.append(f'code = {{ system = "http://snomed.info/sct", code = "{code}", display = {toml_str(display)} }}')
    return "\n".join(lines) + "\n"


def main():
    arch, out = sys.argv[1], sys.argv[2]
    # --export-only: the weights and the description, no reference outputs (the service's
    # end-to-end import test, tests/api/own_model.rs).
    export_only = "--export-only" in sys.argv[3:]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)

    model, labels, size, ch, pre, layer = build(arch)
    with open(os.path.join(out, "description.toml"), "w") as f:
        f.write(description(arch, labels, size, ch, pre))
    lo, hi = pre["intensity_range"]
    mean = pre["mean"] * (ch if len(pre["mean"]) == 1 else 1)
    std = pre["std"] * (ch if len(pre["std"]) == 1 else 1)
    full = torch.nn.Sequential(Preprocess(lo, hi, mean, std), model).eval()
    calibrate_batch_norm(full, size, ch)
    export(model, os.path.join(out, "weights.safetensors"))
    if export_only:
        return
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, SemanticSegmentationTarget

    gray = inputs(size)
    x = gray.repeat(1, ch, 1, 1)
    with torch.no_grad():
        logits = full(x)
    ref = {"inputs": gray.contiguous(), "logits": logits.contiguous()}
    cam = GradCAM(model=full, target_layers=[layer(model)])
    cams, classes = [], []
    if arch == "basic_unet":
        pred = logits.argmax(1)
        ref["mask"] = pred.to(torch.int64).contiguous()
        for i in range(x.shape[0]):
            # Explain the foreground class with the largest area (radsight's default).
            areas = [(pred[i] == c).sum().item() for c in range(1, logits.shape[1])]
            c = 1 + int(np.argmax(areas))
            mask = (pred[i] == c).float().numpy()
            cams.append(cam(input_tensor=x[i:i + 1], targets=[SemanticSegmentationTarget(c, mask)])[0])
            classes.append(c - 1)
    else:
        for i in range(x.shape[0]):
            c = i % logits.shape[1]
            cams.append(cam(input_tensor=x[i:i + 1], targets=[ClassifierOutputTarget(c)])[0])
            classes.append(c)
    ref["cams"] = torch.tensor(np.stack(cams)).float().contiguous()
    ref["classes"] = torch.tensor(classes, dtype=torch.int64)

    if arch != "basic_unet":
        from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst, ROADLeastRelevantFirst
        percentiles = [10, 20, 30, 40, 50, 60, 70, 80, 90]
        morf, lerf = [], []
        for i in range(2):
            c = classes[i]
            target = lambda o, c=c: torch.sigmoid(o[c])  # noqa: E731
            row_m, row_l = [], []
            for p in percentiles:
                torch.manual_seed(SEED + 3)
                row_m.append(float(ROADMostRelevantFirst(p)(x[i:i + 1], cams[i][None], [target], full)[0]))
                torch.manual_seed(SEED + 3)
                row_l.append(float(ROADLeastRelevantFirst(p)(x[i:i + 1], cams[i][None], [target], full)[0]))
            morf.append(row_m)
            lerf.append(row_l)
        ref["road_morf"] = torch.tensor(morf, dtype=torch.float32)
        ref["road_lerf"] = torch.tensor(lerf, dtype=torch.float32)
    save_file(ref, os.path.join(out, "reference.safetensors"))
    print(f"{arch}: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
