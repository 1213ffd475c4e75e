"""The gateway package: every stage of a request, the stores behind them, and nothing of Azure Functions."""
