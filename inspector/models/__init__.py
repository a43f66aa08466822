"""The models the daemon decides with: the production model, an optional shadow candidate, and how they
are loaded, swapped between batches and compared (docs/lifecycle.md)."""
