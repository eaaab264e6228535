"""Attacks on the classifier whose maps the book compares: FGSM / PGD (torchattacks) and the
one-pixel differential-evolution attack; each seeded by its own generator."""
