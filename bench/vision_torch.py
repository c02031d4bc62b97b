"""PyTorch side of bench/vision.sh: the committed radsight-phantom-cxr model (same architecture,
same safetensors weights, BatchNorm in eval mode) timed the same way as examples/bench.rs.
Bench-only; not part of the service. Prints one `key value` per line.

    python bench/vision_torch.py MODEL_DIR [ITERATIONS]
"""
import json
import struct
import sys
import time
import tomllib

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "I64": torch.int64}


def load_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = bytearray(raw[8 + n :])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(data[a:b], dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"])
        out[name] = t.clone()
    return out


class CompactCnn(torch.nn.Module):
    def __init__(self, arch, w):
        super().__init__()
        self.arch, self.w = arch, w

    def features(self, x):
        a = self.arch
        h = (x - a["input_mean"]) / a["input_std"]
        for i, s in enumerate(a["strides"]):
            p = f"features.{i}"
            k = a["kernel"]
            if a.get("batch_norm"):
                h = F.conv2d(h, self.w[f"{p}.conv.weight"], None, stride=s, padding=k // 2)
                h = F.batch_norm(h, self.w[f"{p}.bn.running_mean"], self.w[f"{p}.bn.running_var"],
                                 self.w[f"{p}.bn.weight"], self.w[f"{p}.bn.bias"], training=False, eps=1e-5)
            else:
                h = F.conv2d(h, self.w[f"{p}.weight"], self.w[f"{p}.bias"], stride=s, padding=k // 2)
            h = F.relu(h)
        return h

    def head(self, a):
        return a.mean((2, 3)) @ self.w["head.weight"].t() + self.w["head.bias"]

    def forward(self, x):
        return self.head(self.features(x))


def grad_cam(model, x, c):
    a = model.features(x).detach().requires_grad_(True)
    y = model.head(a)[0, c]
    (g,) = torch.autograd.grad(y, a)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    lo, hi = cam.min(), cam.max()
    return ((cam - lo) / (hi - lo + 1e-12)).detach()


def timed(iters, f):
    for _ in range(3):
        f()
    s = []
    for _ in range(iters):
        t = time.perf_counter()
        f()
        s.append((time.perf_counter() - t) * 1e3)
    s.sort()
    return s[len(s) // 2]


def main():
    d = sys.argv[1]
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    torch.set_num_threads(2)
    card = tomllib.load(open(f"{d}/model-card.toml", "rb"))
    model = CompactCnn(card["architecture"], load_safetensors(f"{d}/weights.safetensors")).eval()
    n = card["input"]["size"]
    torch.manual_seed(0)
    x8 = torch.rand(8, 1, n, n)
    x1 = x8[:1]
    with torch.no_grad():
        f1 = timed(iters, lambda: model(x1))
        f8 = timed(iters, lambda: model(x8))
    g1 = timed(iters, lambda: grad_cam(model, x1, 0))
    print(f"torch_version {torch.__version__}")
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"forward_b1_ms {f1:.3f}")
    print(f"forward_b8_ms {f8:.3f}")
    print(f"forward_b8_per_image_ms {f8 / 8:.3f}")
    print(f"gradcam_b1_ms {g1:.3f}")
    if len(sys.argv) > 3:
        # Cross-check: logits on the same input as the Rust side's reference file.
        ref = json.load(open(sys.argv[3]))
        x = torch.tensor(ref["input"]).reshape(1, 1, n, n)
        with torch.no_grad():
            z = model(x)[0].tolist()
        print("max_abs_logit_diff_vs_rust %.2e" % max(abs(a - b) for a, b in zip(z, ref["logits"])))



def torchvision_main(arch, out, iters):
    """`--torchvision ARCH OUT_DIR [ITERATIONS]`: torchvision's ARCH at 224² with seeded random
    weights (tests/python/torch_parity.py builds it), exported to OUT_DIR for the Rust side
    (examples/bench_imported.rs), timed the same way: single image, forward and forward +
    Grad-CAM on the architecture's target layer."""
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
    import torch_parity as tp
    torch.set_num_threads(2)
    os.makedirs(out, exist_ok=True)
    model, labels, size, ch, pre, _ = tp.build(arch)
    lo, hi = pre["intensity_range"]
    mean = pre["mean"] * (ch if len(pre["mean"]) == 1 else 1)
    std = pre["std"] * (ch if len(pre["std"]) == 1 else 1)
    prep = tp.Preprocess(lo, hi, mean, std)
    full = torch.nn.Sequential(prep, model).eval()
    tp.calibrate_batch_norm(full, size, ch)
    tp.export(model, os.path.join(out, "weights.safetensors"))
    with open(os.path.join(out, "description.toml"), "w") as f:
        f.write(tp.description(arch, labels, size, ch, pre))
    if arch == "densenet121":
        feats = lambda x: F.relu(model.features(prep(x)))  # noqa: E731
        head = lambda a: model.classifier(a.mean((2, 3)))  # noqa: E731
    elif arch.startswith("resnet"):
        def feats(x):
            m = model
            h = m.maxpool(m.relu(m.bn1(m.conv1(prep(x)))))
            return m.layer4(m.layer3(m.layer2(m.layer1(h))))
        head = lambda a: model.fc(a.mean((2, 3)))  # noqa: E731
    else:
        raise SystemExit(f"no bench split for {arch}")

    def grad_cam_tv(x, c):
        a = feats(x).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(head(a)[0, c], a)
        cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        lo_, hi_ = cam.min(), cam.max()
        return ((cam - lo_) / (hi_ - lo_ + 1e-12)).detach()

    x1 = tp.inputs(size, 1).repeat(1, ch, 1, 1)
    with torch.no_grad():
        f1 = timed(iters, lambda: full(x1))
    g1 = timed(iters, lambda: grad_cam_tv(x1, 0))
    print(f"torch_version {torch.__version__}")
    print(f"torch_threads {torch.get_num_threads()}")
    print(f"forward_b1_ms {f1:.3f}")
    print(f"gradcam_b1_ms {g1:.3f}")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--torchvision":
    torchvision_main(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 20)
    sys.exit(0)


if __name__ == "__main__":
    main()
