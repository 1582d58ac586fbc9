"""Make Us Rich core package."""
