"""MF-Think's core logic (the think stage, `stages/think.py`, is the glue): how each reasoning step is
judged (`steps`)."""
