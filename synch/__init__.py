"""synch: keeps an Asterisk branch site's phones working when the central PBX is unreachable.

Kept free of imports on purpose: `synch.cli` must be able to run `gevent.monkey.patch_all()`
before anything else is imported.
"""

__version__ = "0.1.0"
