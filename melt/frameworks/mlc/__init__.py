"""MLC-LLM: recipe (model compilation and runtime), driver, and a stand-in for testing."""
