"""Where the command line looks for data: the options, the run's data.json and the environment (read here, never in the library)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def search(args, run_dir=None) -> dict:
    """Search directories from the options, the run's data.json and the environment: the CLI reads the environment, the library never does.

    A run remembers the directory its data came from; eval, sample and --resume look there first when
    no --data-dir is given, and say so when it is gone.
    """
    from ..store.data import default_cache_dir, default_search_dirs
    from ..store.run_dir import read_data_source

    cache = default_cache_dir(os.environ)
    dirs = args.data_dir
    if dirs is None and run_dir is not None:
        source = read_data_source(run_dir) or {}
        if source.get("dir"):
            if Path(source["dir"]).is_dir():
                dirs = [source["dir"]]
            else:
                print(f"npvae {args.command}: note: the run's data came from {source['dir']}, which is gone; "
                      "looking in the usual places (give --data-dir to say where they are now)", file=sys.stderr)
    return {"search_dirs": default_search_dirs(dirs, os.environ.get("NPVAE_DATA_DIR"), cache),
            "cache_dir": cache, "download": getattr(args, "download", False)}
