"""clo-recipes: YAML recipes for Cross-Lingual Optimization (CLO) language transfer."""

__version__ = "0.1.0"
