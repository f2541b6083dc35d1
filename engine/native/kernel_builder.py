"""Our compiled CPU kernels (kernels/*.c): built once per machine, loaded with ctypes.

The C sources are compiled with the system C compiler for this CPU (-march=native) on first
use and cached under ~/.cache/qwenbot/kernels, keyed by source, compiler and CPU; a build
takes a few seconds. ctypes rather than a torch C++ extension: no torch headers, no
pybind11 and no ninja, so a build needs only `cc`. The library links the OpenMP runtime
that torch has already loaded (libgomp.so.1), so both share one thread pool.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch  # loaded before any kernel library: its libgomp is the one the kernels share

from engine.native.cpu_features import cpu_flags, cpu_has_amx

log = logging.getLogger(__name__)

SOURCES = Path(__file__).parent / "kernels"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
# queries, keys, values, heads, kv_heads, d, capacity, start, count, out, threads
_Signature = tuple[list[type], type | None]
_PROMPT_ATTENTION: _Signature = ([_P, _P, _P, _I64, _I64, _I64, _I64, _I64, _I64, _P, _INT], _INT)
_SIGNATURES: dict[str, _Signature] = {
    "qb_vnni": ([], ctypes.c_int),
    "qb_amx_enable": ([], ctypes.c_int),
    "qb_pack": ([_P, _P, _I64, _I64, _INT, _P, _P], None),
    "qb_rows": ([_P, _P, _INT, _P, _I64, _I64, _P], None),
    "qb_linear": ([_P, _P, _INT, _P, _P, _I64, _I64, _I64, _INT], _INT),
    "qb_prompt_path": ([], ctypes.c_int),
    # packed, scales, bits, x, x_bf16, y, y_bf16, m, n, k, precise, threads, path
    "qb_prompt_linear": ([_P, _P, _INT, _P, _INT, _P, _INT, *[_I64] * 3, _INT, _INT, _INT], _INT),
    "qb_unpack_bf16": ([_P, _P, _INT, _I64, _I64, _P, _INT], None),
    "qb_decode_step": ([_P, _P, _I64, _P, _P, _INT], _INT),
    "qb_rms_norm_rows": ([_P, _I64, _I64, _P, ctypes.c_float, _P, _INT], None),
    "qb_position_heads": ([_P, _P, _P, _I64, _P, _P, _INT], _INT),
    "qb_prompt_attention": _PROMPT_ATTENTION,
    "qb_prompt_attention_per_query": _PROMPT_ATTENTION,
}


class KernelUnavailable(RuntimeError):
    """The compiled kernels cannot be built or loaded here (no C compiler, say)."""


def cache_folder() -> Path:
    """Where built kernel libraries are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwenbot" / "kernels"


def compiler() -> str:
    """The C compiler: $CC, else cc or gcc on the PATH."""
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not found:
        raise KernelUnavailable("no C compiler (set CC, or install gcc)")
    return found


def build(extra_flags: tuple[str, ...] = ()) -> Path:
    """The shared library for this machine, compiling it unless a cached build exists."""
    cc = compiler()
    sources = sorted(SOURCES.glob("*.c"))
    digest = hashlib.sha256()
    for part in (cc, *FLAGS, *extra_flags, ",".join(sorted(cpu_flags()))):
        digest.update(part.encode())
    for source in sorted(SOURCES.glob("*.[ch]")):  # the headers count too
        digest.update(source.read_bytes())
    target = cache_folder() / f"qwenbot-kernels-{digest.hexdigest()[:16]}.so"
    if target.is_file():
        if _intact(target):
            return target
        # A damaged library could crash the process inside a kernel: rebuilt, never loaded.
        log.warning("the cached kernel library %s is damaged or unchecked; rebuilding it",
                    target.name)  # fmt: skip
        target.unlink(missing_ok=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _compile([cc, *FLAGS, *extra_flags, *map(str, sources), "-lm"], target)
    except OSError as error:  # an unwritable cache folder, say
        raise KernelUnavailable(f"cannot build into {target.parent}: {error}") from error
    return target


def _compile(command: list[str], target: Path) -> None:
    """Run the compiler; build beside the target and rename, so two processes starting at
    once never load a half-written file."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        try:
            result = subprocess.run(
                [*command, "-o", str(built)],
                check=False, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as error:
            raise KernelUnavailable(f"cannot run {command[0]}: {error}") from error
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
            raise KernelUnavailable(f"{command[0]} failed: {lines[0][:200]}")
        # The checksum first: a library without one is never trusted.
        _checksum_file(target).write_text(_sha256(built))
        os.replace(built, target)


def _checksum_file(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _intact(library: Path) -> bool:
    """The library is byte for byte what the compiler wrote (a torn write, a disk fault or a
    stray edit shows as a different checksum)."""
    try:
        return _checksum_file(library).read_text().strip() == _sha256(library)
    except OSError:
        return False


def load(path: Path) -> ctypes.CDLL:
    """Open a built library and declare its functions' C signatures."""
    try:
        library = ctypes.CDLL(str(path))
    except OSError as error:
        raise KernelUnavailable(f"cannot load {path.name}: {error}") from error
    for name, (arguments, result) in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = arguments
        function.restype = result
    return library


@functools.cache
def kernels() -> ctypes.CDLL:
    """This machine's kernel library, built on first use (raises KernelUnavailable); on a
    Xeon with AMX, the tile registers are asked for (Linux lends them per process)."""
    library = load(build())
    if cpu_has_amx():
        library.qb_amx_enable()
    return library


def pointer(tensor: torch.Tensor) -> int:
    """The address of a contiguous tensor's data, for a C call."""
    if not tensor.is_contiguous():
        raise ValueError("the kernels need contiguous tensors")
    return tensor.data_ptr()
