"""The hostile-input and damaged-state harness (bench/hostile_inputs.py)."""
