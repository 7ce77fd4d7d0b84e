"""Stage: serving. Predictions from the champion, API keys and tenants' samples."""
