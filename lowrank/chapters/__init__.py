"""One module per chapter of the book, named like its page; the registry finds their experiments."""
