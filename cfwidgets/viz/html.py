"""Static HTML renderings of results: the public name of :mod:`cfwidgets._html`.

The renderers depend on nothing above the bottom layer (PNG encoding, numpy, torch), so
they live there and the shared result type's notebook display hook can use them without
an upward import; viz, widgets and the CLI import them from here.
"""

from .._html import *  # noqa: F403
from .._html import __all__  # noqa: F401
