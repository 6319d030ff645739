"""Test helpers shared by several test files (corpora, fake servers, demo runs); not tests themselves."""
