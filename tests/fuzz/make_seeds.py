#!/usr/bin/python3
"""Seed corpora for the fuzz targets, made by real numpy and PyTorch at test time.

Usage: make_seeds.py OUT_DIR PROTO_DIR   (writes OUT_DIR/<target>/<seed>; the requests of
fuzz_job_validation and fuzz_write_blob_chunk are encoded by protoc from the text format,
against PROTO_DIR)
"""
import io
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import torch

out, proto_dir = sys.argv[1], sys.argv[2]


def put(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


rng = np.random.default_rng(0)
arrays = {
    "f4_nchw": rng.standard_normal((2, 3, 4, 4), dtype=np.float32),
    "f8": rng.standard_normal((3, 5)),
    "f2": rng.standard_normal((4,)).astype(np.float16),
    "f4_be": rng.standard_normal((2, 3)).astype(">f4"),
    "f4_fortran": np.asfortranarray(rng.standard_normal((3, 4), dtype=np.float32)),
    "i8": np.arange(6, dtype=np.int64).reshape(2, 3),
    "u1": np.arange(12, dtype=np.uint8).reshape(3, 4),
    "u2": np.arange(5, dtype=np.uint16),
    "u4_be": np.arange(5, dtype=">u4"),
    "b1": np.array([[True, False], [False, True]]),
    "scalar": np.array(3.5, dtype=np.float32),
    "empty": np.zeros((0, 3), dtype=np.float32),
    # numpy keeps any byte in a bool array: bytes 0..5 here, not just 0 and 1.
    "b1_bytes": np.arange(6, dtype=np.uint8).reshape(2, 3).view(np.bool_),
}
for name, array in arrays.items():
    put("fuzz_npy", name + ".npy", npy_bytes(array))
# Format version 2.0 (4-byte header length), as numpy writes for huge headers.
buf = io.BytesIO()
np.lib.format.write_array(buf, arrays["f4_nchw"], version=(2, 0))
put("fuzz_npy", "v2.npy", buf.getvalue())


def npz_bytes(compressed, **members):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **members)
    return buf.getvalue()


labels = np.array([1, 0], dtype=np.int64)
npz_seeds = {
    "inputs_labels.npz": npz_bytes(False, inputs=arrays["f4_nchw"], labels=labels),
    "inputs_labels_compressed.npz": npz_bytes(True, inputs=arrays["f4_nchw"], labels=labels),
    "arr_0.npz": npz_bytes(False, arr_0=arrays["f8"]),
    "be_fortran.npz": npz_bytes(True, inputs=arrays["f4_fortran"], labels=arrays["u4_be"][:3]),
}
for name, data in npz_seeds.items():
    put("fuzz_npz", name, data)


def torch_save(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


torch.manual_seed(0)
model = Tiny().eval()
script = io.BytesIO()
torch.jit.save(torch.jit.trace(model, torch.randn(1, 3, 8, 8)), script)
pt_seeds = {
    "tensor.pt": torch_save(torch.randn(2, 3, 4, 4)),
    "dict.pt": torch_save({"inputs": torch.randn(2, 3), "labels": torch.tensor([0, 1])}),
    "half.pt": torch_save(torch.randn(3, 2).half()),
    "view.pt": torch_save(torch.randn(4, 6)[1:, ::2]),
    "state_dict.pt": torch_save(model.state_dict()),
    "list.pt": torch_save([torch.randn(2)]),
}
legacy = io.BytesIO()
torch.save(torch.randn(2, 2), legacy, _use_new_zipfile_serialization=False)
for name, data in pt_seeds.items():
    put("fuzz_calibration_file", name, data)
put("fuzz_calibration_file", "f4.npy", npy_bytes(arrays["f4_nchw"]))
put("fuzz_calibration_file", "u2.npy", npy_bytes(arrays["u2"].reshape(5, 1)))
put("fuzz_calibration_file", "b1_bytes.npy", npy_bytes(arrays["b1_bytes"]))
put("fuzz_calibration_file", "inputs_labels.npz", npz_seeds["inputs_labels.npz"])
put("fuzz_calibration_file", "be_fortran.npz", npz_seeds["be_fortran.npz"])

# File sniffing sees every kind of upload.
sniff_seeds = {
    "model.pt": script.getvalue(),
    "legacy.pt": legacy.getvalue(),
    "pickle.pkl": pickle.dumps({"a": [1, 2.0, "x"]}, protocol=4),
    "tensor.pt": pt_seeds["tensor.pt"],
    "state_dict.pt": pt_seeds["state_dict.pt"],
    "array.npy": npy_bytes(arrays["f4_nchw"]),
    "arrays.npz": npz_seeds["inputs_labels_compressed.npz"],
    "text.txt": b"model = torch.load('x')\n",
}
other_zip = io.BytesIO()
with zipfile.ZipFile(other_zip, "w") as z:
    z.writestr("readme.txt", "not a model")
sniff_seeds["other.zip"] = other_zip.getvalue()
for name, data in sniff_seeds.items():
    put("fuzz_file_sniff", name, data)

# Units: what users type for --size, --bops, --timeout.
for i, text in enumerate(["1048576", "1.5MiB", "2MB", "800KiB", "3 GB", "75G", "1.2T",
                          "500M", "30m", "90s", "1h30m", "250ms", "45", "0.5"]):
    put("fuzz_units", f"seed{i}", text.encode())

# Requests as clients send them, encoded by protoc from the text format.
DIGEST = "sha256:" + "ab" * 32
requests = {
    "minimal": f'spec {{ model_digest: "{DIGEST}" calib_digest: "{DIGEST}" '
               f'size_budget_bytes: 1500000 }}',
    "full": f'request_id: "ci-42" spec {{ model_digest: "{DIGEST}" calib_digest: "{DIGEST}" '
            f'bops_budget: 75000000000 weight_bits: [2, 4, 8] act_bits: 8 '
            f'pin_first_last_bits: 0 pins {{ name_regex: "layer1\\\\..*" bits: 6 }} '
            f'beta: 0.5 finetune: NONE search_samples: 64 calib_samples: 256 seed: 7 '
            f'timeout {{ seconds: 1800 }} labels {{ key: "team" value: "vision" }} '
            f'display_name: "resnet18.pt" }}',
    "ptq": f'spec {{ model_digest: "{DIGEST}" calib_digest: "{DIGEST}" '
           f'size_budget_bytes: 1 finetune: PTQ iters: 100 lr: 0.001 }}',
    "bad_digest": 'spec { model_digest: "sha256:xyz" calib_digest: "" }',
}
def encode(message, proto, text):
    """`text` (protobuf text format) encoded by protoc as ompq.v1.`message` of `proto`."""
    return subprocess.run(
        ["protoc", f"--encode=ompq.v1.{message}", f"--proto_path={proto_dir}", proto],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


for name, text in requests.items():
    put("fuzz_job_validation", name + ".pb",
        encode("CreateJobRequest", "ompq/v1/quantization_service.proto", text))

# Upload messages: a first byte that sets where the message is cut into slices, then a
# WriteBlobRequest as ompqctl sends it (the first message, then a data-only one).
uploads = {
    "first": f'digest: "{DIGEST}" size_bytes: 11 data: "hello world"',
    "next": 'data: "' + "x" * 300 + '"',
    "empty": "",
}
for name, text in uploads.items():
    encoded = encode("WriteBlobRequest", "ompq/v1/blob_service.proto", text)
    for cut in (0, 6, 63):
        put("fuzz_write_blob_chunk", f"{name}-{cut}.pb", bytes([cut]) + encoded)
