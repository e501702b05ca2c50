"""What the web server may see and serve: launch options, login, upload names, server folders.

Nearly every Gradio advisory is a client-controlled string becoming a server path or URL, so: the
server binds 127.0.0.1 unless told otherwise, never opens a share tunnel, never renders on the server
(``ssr_mode=False``: Gradio 6.27-6.31 have an auth bypass through SSR) and caps uploads; only the
exports in our temporary work folder are an allowed path (Gradio's uploads beside them are served as
downloads); the runs root, model caches, checkpoint folders and ``.env`` are blocked (blocked wins);
``guard`` checks each request; a client's file name names nothing on disk until its path separators
and control characters are gone; a folder typed into the UI is used only inside a folder the
operator allowed. No Gradio import here.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from autolabel.errors import ConfigError

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

_MAX_NAME = 120
RUN_NAME_LENGTH = 64


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")`` (the first ``:`` separates); None or blank ->
    None (no login). ``ConfigError`` when either part is empty: a typo never disables the login."""
    if text is None or not text.strip():
        return None
    user, sep, password = text.strip().partition(":")
    if not sep or not user.strip() or not password:
        raise ConfigError("AUTOLABEL_UI_AUTH must be 'user:password' with both parts non-empty")
    return user.strip(), password


def _plain_name(text: str) -> str:
    """``text`` in NFC with path separators and control characters (``Cc``, ``Cf``: e.g. the bidi
    overrides that disguise an extension) replaced by ``_``; letters of every script stay."""
    text = unicodedata.normalize("NFC", text)
    return "".join("_" if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)


def sanitize_filename(name: str | None, default: str = "image") -> str:
    """A client-supplied file name -> a safe, non-empty base name that keeps the user's name: no
    directory part, no control characters, no leading dots (no hidden files, no ``..``), bounded
    length (the extension kept)."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = _plain_name(base).strip()
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = stem.lstrip(". ")
    ext = ext.strip()[:10]
    stem = stem[: _MAX_NAME - len(ext) - 1].rstrip() or default
    return f"{stem}.{ext}" if ext else stem


def sanitize_run_name(name: str | None) -> str:
    """A run name typed in the UI -> one folder name under the runs root: the user's name with path
    separators and control characters replaced, no leading dot, bounded. ``ConfigError`` when
    nothing usable is left."""
    cleaned = _plain_name(str(name or "")).strip().lstrip(".").strip()[:RUN_NAME_LENGTH].rstrip()
    if not cleaned.strip("._- "):
        raise ConfigError(f"run name {name!r} has no usable characters: use letters or digits")
    return cleaned


def is_within(path: str | Path, root: str | Path) -> bool:
    """True if ``path`` is ``root`` or lies under it, after resolving links and ``..``."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path == root or root in path.parents


def safe_child(root: str | Path, name: str) -> Path:
    """``root / name`` for a single, already sanitized name; refuses anything that leaves ``root``."""
    root = Path(root).resolve()
    child = (root / name).resolve()
    if child.parent != root:
        raise ConfigError(f"{name!r} is not a plain name inside {root}")
    return child


def unique_child(root: Path, name: str) -> Path:
    """A path for ``name`` in ``root`` that does not exist yet (``a.jpg``, ``a_1.jpg``, ...)."""
    candidate = safe_child(root, name)
    stem, suffix = candidate.stem, candidate.suffix
    n = 1
    while candidate.exists():
        candidate = safe_child(root, f"{stem}_{n}{suffix}")
        n += 1
    return candidate


def resolve_server_folder(text: str, allowed: Iterable[str | Path]) -> Path:
    """A folder path typed in the UI -> the resolved folder, only if it lies inside one of the
    ``--allow-folder`` directories (with none, typed folders are refused)."""
    allowed = [Path(a).resolve() for a in allowed]
    if not allowed:
        raise ConfigError("reading folders on the server is off: upload the images instead")
    text = (text or "").strip()
    if not text:
        raise ConfigError("enter a folder path")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = allowed[0] / path
    resolved = path.resolve()
    if not any(is_within(resolved, root) for root in allowed):
        roots = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"folder {text!r} is outside the allowed folders ({roots})")
    if not resolved.is_dir():
        raise ConfigError(f"folder {text!r} does not exist")
    return resolved


def blocked_paths(runs_dir: Path, work_dir: Path, model_paths: Iterable[str | None] = ()) -> list[str]:
    """Absolute paths the server must never serve (Gradio's ``blocked_paths``; blocked wins): model
    caches and checkpoints, ``.env``, and the runs root (downloads are copied into the work folder
    first), or, when the work folder lies inside it, the databases of the runs that exist now."""
    runs_dir, work_dir = Path(runs_dir).resolve(), Path(work_dir).resolve()
    paths: list[Path] = []
    if is_within(work_dir, runs_dir):
        from autolabel.store import DB_NAME

        for db in sorted(runs_dir.glob(f"*/{DB_NAME}")):
            paths += [db, db.with_name(DB_NAME + "-wal"), db.with_name(DB_NAME + "-shm")]
    else:
        paths.append(runs_dir)
    cache = Path.home() / ".cache"
    paths += [Path(os.environ.get("HF_HOME", cache / "huggingface")), cache / "torch", Path.cwd() / ".env"]
    paths += [Path(os.environ[var]) for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE",
                                                "TORCH_HOME") if os.environ.get(var)]
    for model in model_paths:
        if model and Path(model).exists():
            paths.append(Path(model))
    out: list[str] = []
    for p in paths:
        s = str(Path(p).resolve())
        if s not in out and not is_within(work_dir, s):
            out.append(s)
    return out


def launch_kwargs(*, work_dir: Path, runs_dir: Path, host: str = "127.0.0.1", port: int | None = 7860,
                  auth: tuple[str, str] | None = None, max_file_size: str | int = "200mb",
                  model_paths: Iterable[str | None] = ()) -> dict:
    """Keyword arguments for ``gr.Blocks.launch`` with every security-relevant option explicit (so
    ``GRADIO_SHARE``-style environment variables cannot widen anything). Only the work folder's
    exports are allowed: Gradio serves an allowed file inline with its own type, so the upload
    folder must stay outside (there an uploaded HTML or SVG file would be a page on our origin)."""
    from autolabel.ui.downloads import EXPORTS

    work_dir = Path(work_dir).resolve()
    return {
        "server_name": host,
        "server_port": port,
        "share": False,
        "ssr_mode": False,
        "auth": auth,
        "max_file_size": max_file_size,
        "allowed_paths": [str(work_dir / EXPORTS)],
        "blocked_paths": blocked_paths(runs_dir, work_dir, model_paths),
        "show_error": False,  # unexpected exceptions show as a generic error, never a traceback
        "enable_monitoring": False,
        "mcp_server": False,
        "pwa": False,
        "strict_cors": True,
        "run_history": False,
        "footer_links": [],
        "inbrowser": False,
    }


def gradio_environment(work_dir: Path) -> dict[str, str]:
    """The environment variables that point Gradio's upload/cache folders into ``work_dir`` and
    turn its telemetry off (Gradio reads them when it builds components and the server)."""
    work_dir = Path(work_dir).resolve()
    return {"GRADIO_TEMP_DIR": str(work_dir / "gradio"), "GRADIO_EXAMPLES_CACHE": str(work_dir / "gradio-examples"),
            "GRADIO_ANALYTICS_ENABLED": "False"}


def prepare_gradio_environment(work_dir: Path) -> None:
    """Set ``gradio_environment(work_dir)`` in this process, before the Blocks are built: a
    process-wide change, made only by the UI's entry points (``autolabel ui``, ``app.launch``)."""
    env = gradio_environment(work_dir)
    Path(env["GRADIO_TEMP_DIR"]).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)


def warn_if_exposed(host: str, auth) -> str | None:
    """A warning line when the UI listens beyond this machine without a login."""
    if host not in LOCAL_HOSTS and not auth:
        return (f"the UI listens on {host} without a login: anyone who can reach this machine can use it "
                "(set AUTOLABEL_UI_AUTH=user:password)")
    return None
