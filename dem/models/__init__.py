"""Model families: pure E-step / M-step functions plus an estimator for each."""
