"""Test support: helpers, toy stages and fixtures, shared by every test folder."""
