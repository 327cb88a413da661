#!/usr/bin/python3
"""Builds the TorchScript models, calibration files and bad inputs the engine tests use,
plus the expected layer facts computed independently of the engine.

Usage: make_models.py OUT_DIR

Expected values come from forward hooks on the nn.Module *before* export and numpy in
float64, never from a TorchScript graph: names are module paths from named_modules(),
order is the order the hooks fire, MACs come from the modules' own attributes, and the
ORM matrix follows ALGORITHM.md literally (K = X X^T, H K H, Frobenius products).

Everything is seeded; reruns give the same files. A stamp file holding this script's
SHA-256 lets the test fixture skip regeneration when nothing changed.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision

import stamp

SAMPLES = 16         # Samples the expected values (and the tests) use.
CALIB_SAMPLES = 20   # Samples in the calibration files: the search must take the first 16.
IMAGE = (3, 64, 64)  # Small images keep the tests fast.


def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)


def calibrate_batch_norm(model, seed, example_shape):
    """Non-trivial BatchNorm statistics (fresh modules have mean 0, var 1, weight 1, bias 0).

    Random affine parameters, then running statistics accumulated by train-mode forwards
    on random batches, as training would leave them. (Purely random running statistics
    would not match the activations, and the signal of a deep network then fades to float
    rounding noise, which no test can compare meaningfully.)
    """
    generator = torch.Generator().manual_seed(seed)
    batch_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in batch_norms:
        c = module.num_features
        with torch.no_grad():
            module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.copy_(torch.rand(c, generator=generator) * 0.4 - 0.2)
        module.reset_running_stats()
        module.momentum = None  # Cumulative average over the batches below.
    if batch_norms:
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(16, *example_shape, generator=generator))
    return model.eval()


# ----------------------------------------------------------------------------------------
# Independent expected values.

def expected_layers(model, inputs):
    """Runs `model` eagerly with hooks; returns the expected facts as a dict."""
    n = inputs.shape[0]
    names = {module: name for name, module in model.named_modules()}
    order = []           # Layer names in order of first call.
    facts = {}           # name -> dict
    features = {}        # name -> float64 numpy [n, d] of the first call
    produced_by = {}     # id(output tensor) -> layer name, to spot BatchNorm consumers
    energy = {}          # name -> h per input channel of the first call (float64 numpy)
    batch_norm = {}      # name -> the BatchNorm consuming its output
    modules = {name: module for name, module in model.named_modules()}

    weights = {}         # name -> the weight tensor (attention's are not modules)

    def record_input(name, x, channel):
        if name not in energy:
            x = x.detach().double()
            dims = [d for d in range(x.dim()) if d != channel]
            energy[name] = (x * x).mean(dim=dims).numpy()

    def record_layer(name, kind, weight, per_output, output):
        macs = per_output * (output.numel() // n)
        if output.shape[0] != n:  # Sequence-first attention: [T, N, ...].
            assert output.shape[1] == n, output.shape
            output = output.transpose(0, 1)
        if name not in facts:
            order.append(name)
            weights[name] = weight
            facts[name] = {"name": name, "kind": kind,
                           "weight_shape": list(weight.shape),
                           "params": weight.numel(), "macs": 0, "calls": 0,
                           "after_batch_norm": False}
            features[name] = output.detach().reshape(n, -1).double().numpy().copy()
            produced_by[id(output)] = name
        facts[name]["macs"] += macs
        facts[name]["calls"] += 1

    def input_hook(module, args):
        record_input(names[module], args[0], args[0].dim() - 1 if isinstance(module, nn.Linear) else 1)

    def layer_hook(module, args, output):
        if isinstance(module, nn.Linear):
            kind = "linear"
            per_output = module.in_features
        else:
            kind = "conv%dd" % (module.weight.dim() - 2)
            per_output = (module.in_channels // module.groups) * int(np.prod(module.kernel_size))
        record_layer(names[module], kind, module.weight, per_output, output)

    # nn.MultiheadAttention calls its projections functionally (no module hooks fire): its
    # packed input projection is the layer `<attn>.in_proj` (F.linear of the query with
    # in_proj_weight), and `<attn>.out_proj` produces the attention's output. Self-attention.
    # Callers pass the query by keyword too, which forward pre-hooks do not see here.
    def watch_attention(module):
        forward = module.forward

        def watched(*args, **kwargs):
            query = args[0] if args else kwargs["query"]
            name = names[module]
            record_input(name + ".in_proj", query, query.dim() - 1)
            qkv = nn.functional.linear(query, module.in_proj_weight, module.in_proj_bias)
            record_layer(name + ".in_proj", "linear", module.in_proj_weight, module.embed_dim, qkv)
            output = forward(*args, **kwargs)
            # Its input (the heads' concatenated context) is not visible here, so attention
            # models have no distortion expectations.
            record_layer(name + ".out_proj", "linear", module.out_proj.weight, module.embed_dim,
                         output[0])
            return output

        module.forward = watched

    def bn_hook(module, args, output):
        name = produced_by.pop(id(args[0]), None)
        if name is not None:  # This BatchNorm consumes a layer's output: take its output.
            features[name] = output.detach().reshape(n, -1).double().numpy().copy()
            facts[name]["after_batch_norm"] = True
            batch_norm[name] = module

    handles = []
    has_attention = False
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and not isinstance(
                module, nn.modules.linear.NonDynamicallyQuantizableLinear):
            handles.append(module.register_forward_hook(layer_hook))
            handles.append(module.register_forward_pre_hook(input_hook))
        elif isinstance(module, nn.MultiheadAttention):
            has_attention = True
            watch_attention(module)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_hook(bn_hook))
    # With gradients on, PyTorch takes attention's unfused path (the fused eval fast path
    # would hide the calls the hooks see); the engine rewrites the fused ops the same way.
    with torch.set_grad_enabled(has_attention):
        model(inputs)
    for handle in handles:
        handle.remove()
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            del module.forward  # The class's own again.

    # ALGORITHM.md: K = X X^T, centred K~ = H K H, ORM_ij = <K~i,K~j> / (|K~i| |K~j|).
    h = np.eye(n) - np.ones((n, n)) / n
    grams = []
    for name in order:
        x = features[name]
        grams.append(h @ (x @ x.T) @ h)
    count = len(order)
    orm = np.ones((count, count))
    for i in range(count):
        for j in range(count):
            if i != j:
                orm[i, j] = np.sum(grams[i] * grams[j]) / (
                    np.linalg.norm(grams[i]) * np.linalg.norm(grams[j]))
    gamma = orm.sum(axis=1) - 1.0

    total = sum(p.numel() for p in model.parameters())
    quantized = sum(facts[name]["params"] for name in order)
    distortion = {} if has_attention else {
        name: layer_distortion(modules[name], batch_norm.get(name), energy[name])
        for name in order}
    weight_ids = {id(weights[name]) for name in order}
    return {
        # Parameters that are no layer's weight (named_parameters counts shared ones once).
        "unquantized": [name for name, p in model.named_parameters() if id(p) not in weight_ids],
        "distortion": distortion,
        "samples": n,
        "layers": [facts[name] for name in order],
        "orm": orm.tolist(),
        "gamma": gamma.tolist(),
        "total_parameters": total,
        "other_bytes": 4 * (total - quantized),
    }


# workers/engine/layer_distortion.h: D(b) = sum (Q_b(W) - W)^2 h / sum W^2 h, with W the
# BatchNorm-folded weight, h the mean square of each input channel, Q_b the per-channel
# weight quantizer on 10 clip ratios 1, 0.92, ... (quant_reference.search), made
# non-increasing in b; measured on every stride-th output channel, at most 2^16 weights.
DISTORTION_ELEMENTS = 1 << 16
DISTORTION_BITS = list(range(2, 9))


def layer_distortion(module, bn, energy):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "quant"))
    import quant_reference
    w = module.weight.detach().double().numpy()
    if bn is not None:
        factor = (bn.weight.detach().double() if bn.weight is not None else 1.0) / torch.sqrt(
            bn.running_var.double() + bn.eps)
        w = w * factor.numpy().reshape([-1] + [1] * (w.ndim - 1))
    w = w.astype(np.float32).astype(np.float64)  # The engine quantizes the float32 weight.
    out, per_group = w.shape[0], w.shape[1]
    groups = energy.shape[0] // per_group
    h = np.repeat(energy.reshape(groups, 1, per_group), out // groups, axis=1).reshape(
        [out, per_group] + [1] * (w.ndim - 2))
    h = np.broadcast_to(h, w.shape)
    row = w[0].size
    wanted = max(1, -(-DISTORTION_ELEMENTS // row))
    stride = max(1, -(-out // wanted))
    w, h = w[::stride], h[::stride]
    out = w.shape[0]
    total = float((w * w * h).sum())
    data = w.reshape(out, -1)
    lo0 = np.minimum(data.min(axis=1), 0.0)
    hi0 = np.maximum(data.max(axis=1), 0.0)
    table, best = {}, np.inf
    for bits in DISTORTION_BITS:
        scale, zero, _, _, _ = quant_reference.search(data, lo0, hi0, bits, False, 2.4,
                                                      num_candidates=10, ratio_step=0.08)
        q = quant_reference.codes(data, scale, zero, bits)
        dq = ((q - zero[:, None]) * scale[:, None]).reshape(w.shape)
        d = float(((dq - w) ** 2 * h).sum()) / total if total > 0 else 0.0
        best = min(best, d)
        table[str(bits)] = best
    return table


# ----------------------------------------------------------------------------------------
# Models.

class GroupedNet(nn.Module):
    """Grouped and depthwise convolutions, one without BatchNorm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False)
        self.grouped_bn = nn.BatchNorm2d(32)
        self.depthwise = nn.Conv2d(32, 32, 3, stride=2, padding=1, groups=32)
        self.pointwise = nn.Conv2d(32, 8, 1)
        self.classifier = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = torch.relu(self.grouped_bn(self.grouped(x)))
        x = torch.relu(self.depthwise(x))
        x = self.pointwise(x)
        return self.classifier(x.flatten(1))


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn(self.conv(x)))


class ScriptedVideoNet(nn.Module):
    """Scripted (not traced): Conv3d, a ModuleList loop, an if on the input size."""

    def __init__(self):
        super().__init__()
        self.conv3d = nn.Conv3d(3, 8, (2, 3, 3), padding=(0, 1, 1))
        self.bn3d = nn.BatchNorm3d(8)
        self.blocks = nn.ModuleList([Block(8), Block(8)])
        self.reduce = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.bn3d(self.conv3d(x)))
        x = x.mean(2)
        for block in self.blocks:
            x = block(x)
        if x.size(-1) > 8:
            x = self.reduce(x)
        return self.head(x.mean([2, 3]))


class SequenceNet(nn.Module):
    """Conv1d, then Linear on [N, T, F], with one Linear module called twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1)
        self.shared = nn.Linear(16, 16)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x)).transpose(1, 2)
        x = torch.relu(self.shared(x))
        x = torch.relu(self.shared(x))
        return self.out(x).mean(1)


class TextEncoder(nn.Module):
    """Transformer encoder layers on [N, T, E] float embeddings, then the mean over time
    and a Linear head. Traced in eval mode without gradients, PyTorch runs each layer's
    fused fast path (aten::_transformer_encoder_layer_fwd): post-norm ReLU layers in
    `encoder`, a pre-norm GELU one after them."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2)
        self.pre_norm = nn.TransformerEncoderLayer(32, 4, 48, batch_first=True, norm_first=True,
                                                   activation="gelu")
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.pre_norm(self.encoder(x)).mean(1))


class SeqFirstEncoder(nn.Module):
    """A sequence-first nn.TransformerEncoder (batch_first=False, PyTorch's default; it has
    no fused path) on [N, T, E] inputs turned to [T, N, E]: its projections see the batch in
    dimension 1, and the attention's output projection the flattened [T * N, E]."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64), 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.encoder(x.transpose(0, 1)).mean(0))


class NoLayers(nn.Module):
    def forward(self, x):
        return torch.relu(nn.functional.avg_pool2d(x, 2))


class ReadsFile(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        data = torch.from_file("/etc/hostname", False, 4, dtype=torch.uint8)
        return self.fc(x) + data.float().sum()


class SavesFile(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.fc(x)
        torch.save(y, "/tmp/ompq-should-not-exist")
        return y


class Profiled(nn.Module):
    """Calls an op outside aten::/prim:: that LibTorch knows (profiler::)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        with torch.autograd.profiler.record_function("fc"):
            y = self.fc(x)
        return y


def custom_op_model():
    """A model calling an op from a library the C++ side does not have."""
    library = torch.library.Library("ompqtest", "DEF")
    library.define("double_it(Tensor x) -> Tensor")
    library.impl("double_it", lambda x: x * 2, "CPU")

    class UsesCustomOp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return torch.ops.ompqtest.double_it(self.fc(x))

    return torch.jit.script(UsesCustomOp()), library


def save_model(out, name, model, example, scripted=False, fused=False):
    """`fused`: traced without gradients, so attention runs PyTorch's fused fast path."""
    model.eval()
    with torch.set_grad_enabled(not fused):
        exported = torch.jit.script(model) if scripted else torch.jit.trace(model, example)
    exported.save(os.path.join(out, name + ".pt"))
    return exported


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    if stamp.is_current(out, __file__):
        print("test models are up to date in", out)
        return
    torch.set_num_threads(os.cpu_count() or 1)

    # Calibration images shared by the image models.
    seed_all(0)
    images = torch.randn(CALIB_SAMPLES, *IMAGE)
    labels = torch.randint(0, 10, (CALIB_SAMPLES,))
    torch.save(images, os.path.join(out, "calib_images.pt"))
    torch.save({"inputs": images, "labels": labels}, os.path.join(out, "calib_images_dict.pt"))
    np.save(os.path.join(out, "calib_images.npy"), images.numpy())
    np.savez(os.path.join(out, "calib_images.npz"), inputs=images.numpy(), labels=labels.numpy())
    search_images = images[:SAMPLES]

    image_models = {
        "resnet18": (1, lambda: torchvision.models.resnet18()),
        "mobilenet_v2": (2, lambda: torchvision.models.mobilenet_v2()),
    }
    for name, (seed, build) in image_models.items():
        seed_all(seed)
        model = calibrate_batch_norm(build(), seed, IMAGE)
        write_json(os.path.join(out, name + ".expected.json"),
                   expected_layers(model, search_images))
        save_model(out, name, model, search_images[:2])

    seed_all(3)
    grouped = calibrate_batch_norm(GroupedNet(), 3, (3, 16, 16))
    grouped_inputs = torch.randn(CALIB_SAMPLES, 3, 16, 16)
    torch.save(grouped_inputs, os.path.join(out, "calib_grouped.pt"))
    write_json(os.path.join(out, "grouped.expected.json"),
               expected_layers(grouped, grouped_inputs[:SAMPLES]))
    save_model(out, "grouped", grouped, grouped_inputs[:2])

    seed_all(4)
    video = calibrate_batch_norm(ScriptedVideoNet(), 4, (3, 4, 16, 16))
    video_inputs = torch.randn(CALIB_SAMPLES, 3, 4, 16, 16)
    torch.save(video_inputs, os.path.join(out, "calib_video.pt"))
    write_json(os.path.join(out, "scripted.expected.json"),
               expected_layers(video, video_inputs[:SAMPLES]))
    save_model(out, "scripted", video, None, scripted=True)

    seed_all(5)
    sequence = SequenceNet().eval()
    sequence_inputs = torch.randn(CALIB_SAMPLES, 8, 20)
    np.savez(os.path.join(out, "calib_sequence.npz"), inputs=sequence_inputs.numpy())
    write_json(os.path.join(out, "sequence.expected.json"),
               expected_layers(sequence, sequence_inputs[:SAMPLES]))
    save_model(out, "sequence", sequence, sequence_inputs[:2])

    # Transformers, each traced on PyTorch's fused attention (the engine unfuses it): a
    # small torchvision ViT and a text encoder.
    seed_all(7)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=4, hidden_dim=32, mlp_dim=64,
                                               num_classes=10).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.1)  # torchvision starts it at zero.
    vit_inputs = torch.randn(CALIB_SAMPLES, 3, 32, 32)
    torch.save(vit_inputs, os.path.join(out, "calib_vit.pt"))
    write_json(os.path.join(out, "vit.expected.json"), expected_layers(vit, vit_inputs[:SAMPLES]))
    save_model(out, "vit", vit, vit_inputs[:2], fused=True)
    seed_all(8)
    text = TextEncoder().eval()
    text_inputs = torch.randn(CALIB_SAMPLES, 12, 32)
    torch.save(text_inputs, os.path.join(out, "calib_text.pt"))
    write_json(os.path.join(out, "text_encoder.expected.json"),
               expected_layers(text, text_inputs[:SAMPLES]))
    save_model(out, "text_encoder", text, text_inputs[:2], fused=True)
    seed_all(9)
    seq_first = SeqFirstEncoder().eval()
    write_json(os.path.join(out, "seq_first.expected.json"),
               expected_layers(seq_first, text_inputs[:SAMPLES]))
    save_model(out, "seq_first", seq_first, text_inputs[:2])

    # --- Bad models.
    seed_all(6)
    torch.save(torchvision.models.resnet18().state_dict(), os.path.join(out, "state_dict.pt"))
    with open(os.path.join(out, "random.bin"), "wb") as f:
        f.write(np.random.RandomState(6).bytes(4096))
    open(os.path.join(out, "empty.pt"), "wb").close()
    with open(os.path.join(out, "notes.txt"), "w") as f:
        f.write("this is not a model\n")
    save_model(out, "no_layers", NoLayers(), torch.randn(2, 3, 8, 8))
    save_model(out, "reads_file", ReadsFile(), None, scripted=True)
    save_model(out, "saves_file", SavesFile(), None, scripted=True)
    save_model(out, "profiled", Profiled(), None, scripted=True)
    custom, _library = custom_op_model()
    custom.save(os.path.join(out, "custom_op.pt"))
    torch.save(torch.randn(4, 4), os.path.join(out, "calib_vectors.pt"))

    # --- Bad calibration inputs (for the image models).
    with_nan = images.clone()
    with_nan[3, 1, 5, 7] = float("nan")
    torch.save(with_nan, os.path.join(out, "calib_nan.pt"))
    torch.save(torch.randn(CALIB_SAMPLES, 1, 64, 64), os.path.join(out, "calib_one_channel.pt"))
    torch.save(images[:1].clone(), os.path.join(out, "calib_one_sample.pt"))
    torch.save(images, os.path.join(out, "calib_legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save([images], os.path.join(out, "calib_list.pt"))
    torch.save((images, labels), os.path.join(out, "calib_tuple.pt"))
    torch.save({"images": images, "targets": labels}, os.path.join(out, "calib_wrong_keys.pt"))

    # --- .npy variants written by numpy itself, all holding arange(24) as [2, 3, 4].
    values = np.arange(24).reshape(2, 3, 4)
    np.save(os.path.join(out, "npy_f4.npy"), values.astype("<f4"))
    np.save(os.path.join(out, "npy_f8_fortran.npy"), np.asfortranarray(values.astype("<f8")))
    np.save(os.path.join(out, "npy_i4_big.npy"), values.astype(">i4"))
    np.save(os.path.join(out, "npy_u2.npy"), (values + 65500).astype("<u2"))
    np.save(os.path.join(out, "npy_u1.npy"), values.astype("u1"))

    stamp.write(out, __file__)
    print("wrote test models to", out)


if __name__ == "__main__":
    main()
