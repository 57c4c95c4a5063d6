"""The paper's statements as functions: identities, bounds, stationarity certificates."""
