"""What every benchmark does with its result: print the JSON and, with ``--out``, save it."""
import json
from pathlib import Path


def emit(res: dict, out=None) -> int:
    text = json.dumps(res, indent=2)
    print(text)
    if out:
        Path(out).write_text(text)
    return 0
