"""The secret key that signs studio sessions: generated once, readable by its owner only
from the moment it exists, and refused when too short or open to other users."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from web.config import ConfigError, _write_secret_key, load_settings


def _env(var_dir: Path) -> dict[str, str]:
    return {"KEYART_VAR_DIR": str(var_dir)}


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Files made with the umask alone would be readable (and writable) by everyone."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_a_generated_key_is_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None
) -> None:
    # Writing the key, then narrowing its mode, would leave a moment when anyone could read
    # it: record the mode of any file that is narrowed.
    narrowed: list[int] = []
    chmod = Path.chmod

    def spy(self: Path, mode: int, **kwargs: object) -> None:
        narrowed.append(stat.S_IMODE(self.stat().st_mode))
        chmod(self, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "chmod", spy)
    var_dir = tmp_path / "var"
    key = load_settings(_env(var_dir)).secret_key
    assert len(key) >= 32 and all(not mode & 0o077 for mode in narrowed)
    assert [p.name for p in var_dir.iterdir()] == ["secret_key"]  # no draft left behind
    assert stat.S_IMODE((var_dir / "secret_key").stat().st_mode) == 0o600
    assert load_settings(_env(var_dir)).secret_key == key


def test_a_key_another_process_made_first_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    path.write_text("theirs-0123456789abcdef")
    path.chmod(0o600)
    _write_secret_key(path)
    assert path.read_text() == "theirs-0123456789abcdef"
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


@pytest.mark.parametrize("content", ["", "\n", "abc", "fifteen-chars!!"])
def test_a_short_key_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secret_key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="shorter than 16") as refused:
        load_settings(_env(tmp_path))
    assert str(path) in str(refused.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret_key"
    path.write_text("a-perfectly-long-secret-key")
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as refused:
        load_settings(_env(tmp_path))
    assert str(path) in str(refused.value)
    path.chmod(0o600)
    assert load_settings(_env(tmp_path)).secret_key == "a-perfectly-long-secret-key"


def test_postgresql_needs_a_shared_secret_key(tmp_path: Path) -> None:
    postgres = {"KEYART_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test"}
    generated = load_settings({**_env(tmp_path), **postgres})
    assert generated.key_origin == "generated"
    with pytest.raises(ConfigError, match=r"every host .* must share the same secret key"):
        generated.require_shared_secret()
    # SQLite (one host) keeps the generated file.
    load_settings(_env(tmp_path)).require_shared_secret()

    key_file = tmp_path / "shared-key"
    key_file.write_text("the-key-every-host-mounts\n")
    key_file.chmod(0o600)
    from_file = load_settings(
        {**_env(tmp_path), **postgres, "KEYART_SECRET_KEY_FILE": str(key_file)}
    )
    assert from_file.secret_key == "the-key-every-host-mounts" and from_file.key_origin == "file"
    from_file.require_shared_secret()
    given = load_settings({**_env(tmp_path), **postgres, "KEYART_SECRET_KEY": "x" * 20})
    given.require_shared_secret()

    with pytest.raises(ConfigError, match="not both"):
        load_settings(
            {
                **_env(tmp_path),
                "KEYART_SECRET_KEY": "x" * 20,
                "KEYART_SECRET_KEY_FILE": str(key_file),
            }
        )
    with pytest.raises(ConfigError, match="not a file"):
        load_settings({**_env(tmp_path), "KEYART_SECRET_KEY_FILE": str(tmp_path / "nope")})
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match=r"chmod 600\)$"):
        load_settings({**_env(tmp_path), "KEYART_SECRET_KEY_FILE": str(key_file)})


def test_serve_refuses_to_start_on_postgresql_without_a_shared_key(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from web.cli import main

    env = {
        "KEYART_VAR_DIR": str(tmp_path),
        "KEYART_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "KEYART_SECRET_KEY": "",
    }
    result = CliRunner().invoke(main, ["serve", "--no-learner"], env=env)
    assert result.exit_code == 1
    assert (
        "KEYART_SECRET_KEY (or KEYART_SECRET_KEY_FILE) must be set on PostgreSQL" in result.output
    )
    assert "every host" in result.output
