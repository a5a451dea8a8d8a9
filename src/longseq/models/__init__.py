"""Model families: Longformer, BigBird and Reformer."""
