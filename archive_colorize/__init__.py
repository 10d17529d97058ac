"""archive-colorize: Iizuka et al. (SIGGRAPH 2016) colorization at archive scale."""

__version__ = "0.1.0"
