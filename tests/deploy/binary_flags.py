"""The flags a binary really accepts, read from its --helpfull (absl prints one
'    --name (help...)' line per flag; names are shown with '_', typed with '-' or '_')."""
import re
import subprocess


def accepted_flags(binary):
    result = subprocess.run([str(binary), "--helpfull"], capture_output=True, text=True, timeout=60)
    text = result.stdout + result.stderr
    flags = set(re.findall(r"^\s+--([a-z0-9_]+) \(", text, re.M))
    if result.returncode < 0 or not flags:
        raise SystemExit(f"FAIL: `{binary} --helpfull` (exit {result.returncode}) lists no flags:\n"
                         f"{text[-2000:]}")
    return flags


def flag_name(arg):
    """'--tls-cert=/x' -> 'tls_cert' (None for a non-flag argument)."""
    if not arg.startswith("--"):
        return None
    return arg[2:].split("=", 1)[0].replace("-", "_")
