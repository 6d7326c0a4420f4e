"""``python -m sdi.models.mini_world clip RECIPE_JSON OUT_FOLDER``: the second process of
:func:`~sdi.models.mini_world.build.build_world`, which trains CLIP while the VAE trains."""

import sys

from sdi.models.mini_world.build import _clip_main

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "clip":
        _clip_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m sdi.models.mini_world clip RECIPE_JSON OUT_FOLDER (used by build_world)")
