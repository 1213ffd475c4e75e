"""The semantic cache evaluation set and the threshold curve drawn from it."""
