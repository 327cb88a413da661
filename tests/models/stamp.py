"""A generated folder's stamp: the SHA-256 of the script that wrote it (file STAMP), so
that rerunning an unchanged script skips the regeneration."""
import hashlib
import os


def _digest(script):
    with open(script, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def is_current(out, script):
    path = os.path.join(out, "STAMP")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        return f.read().strip() == _digest(script)


def write(out, script):
    with open(os.path.join(out, "STAMP"), "w") as f:
        f.write(_digest(script) + "\n")
