"""Example package for examples/market_hours_sao_paulo.yaml (found through its `python_path: .`)."""
