"""bikeshare_assets: 30-minute-ahead bike-share stockout predictions as Dagster assets."""

__version__ = "0.1.0"
