#!/usr/bin/env python3
"""Export a PyTorch model's weights for `radsight models import`.

radsight never unpickles: it reads weights only as safetensors. Run this on your side, where
the model was trained, to turn a `torch.nn.Module` or a `.pt` / `.pth` state dict into a
safetensors file with the model's own tensor names (torchvision, TorchXRayVision, MONAI):

    # a saved state dict (loaded with torch.load(weights_only=True): no code is executed)
    python scripts/export_torch.py model.pt weights.safetensors

    # options
    --strip-prefix module.     remove a DataParallel / Lightning prefix (repeatable; default:
                               "module." when every key has it)
    --drop op_threshs          drop keys that are not weights of the architecture (repeatable;
                               TorchXRayVision's DenseNet stores `op_threshs`)
    --key state_dict           take the dict under this key of a checkpoint (default: the
                               first of state_dict / model / net found, else the whole file)
    --float32                  convert float16 / bfloat16 / float64 tensors to float32 here
                               (radsight converts them at import anyway and records it)

or from Python, with the module in hand:

    import sys; sys.path.insert(0, "scripts")
    from export_torch import export
    export(model, "weights.safetensors")          # model: torch.nn.Module or a state dict

Then write a description (TOML) and import both:

    id = "xrv-densenet121"            # lowercase letters, digits, '-'
    version = "1.0.0"
    name = "DenseNet-121 chest radiograph classifier"
    architecture = "densenet121"      # densenet121, efficientnet_b0, resnet18/34/50, basic_unet
    [input]
    size = 224
    channels = 1
    resize = "letterbox"              # letterbox, resize, center-crop
    intensity_range = [-1024.0, 1024.0]   # [0, 1] pixels are mapped here (TorchXRayVision)
    # mean = [0.485, 0.456, 0.406]   # then (x - mean) / std, per channel (ImageNet models)
    # std = [0.229, 0.224, 0.225]
    [[labels]]                        # one per output, in output order
    name = "Atelectasis"
    code = { system = "http://snomed.info/sct", code = "46621007", display = "Atelectasis" }
    threshold = 0.5

    radsight models import weights.safetensors description.toml

The import refuses weights whose tensors do not match the architecture, naming the first
missing or mis-shaped tensor.
"""
import argparse
import sys

import torch
from safetensors.torch import save_file


def state_dict_of(obj, key=None):
    """The flat name -> tensor dict of a module, a state dict or a checkpoint dict."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict):
        raise SystemExit(f"expected a state dict or a checkpoint dict, got {type(obj).__name__}")
    if key is not None:
        return obj[key]
    for k in ("state_dict", "model", "net"):
        if isinstance(obj.get(k), dict):
            return obj[k]
    return obj


def clean(sd, strip_prefixes=(), drop=(), float32=False):
    """Tensors only, prefixes stripped, dropped keys removed, contiguous and unshared."""
    keys = [k for k, v in sd.items() if torch.is_tensor(v)]
    prefixes = list(strip_prefixes)
    if not prefixes and keys and all(k.startswith("module.") for k in keys):
        prefixes = ["module."]
    out = {}
    for k in keys:
        name = k
        for p in prefixes:
            if name.startswith(p):
                name = name[len(p):]
        if any(name == d or name.startswith(d + ".") for d in drop):
            continue
        t = sd[k].detach().cpu()
        if float32 and t.is_floating_point() and t.dtype != torch.float32:
            t = t.float()
        out[name] = t.contiguous().clone()
    return out


def export(model_or_state_dict, path, strip_prefixes=(), drop=(), float32=False):
    """Writes the weights of a module or state dict to `path` as safetensors; returns the dict."""
    sd = clean(state_dict_of(model_or_state_dict), strip_prefixes, drop, float32)
    save_file(sd, path, metadata={"format": "pt", "exported_by": "radsight scripts/export_torch.py"})
    return sd


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state_dict", help=".pt / .pth file (a state dict or a checkpoint holding one)")
    ap.add_argument("out", help="output .safetensors file")
    ap.add_argument("--strip-prefix", action="append", default=[])
    ap.add_argument("--drop", action="append", default=[])
    ap.add_argument("--key", default=None)
    ap.add_argument("--float32", action="store_true")
    a = ap.parse_args(argv)
    obj = torch.load(a.state_dict, map_location="cpu", weights_only=True)
    sd = clean(state_dict_of(obj, a.key), a.strip_prefix, a.drop, a.float32)
    save_file(sd, a.out, metadata={"format": "pt", "exported_by": "radsight scripts/export_torch.py"})
    print(f"wrote {len(sd)} tensors to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
