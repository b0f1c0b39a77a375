"""What a run or its translations look like: evaluation reports, learning curves, and
pictures of the attention, gates and memory cells (`nmt inspect`)."""
