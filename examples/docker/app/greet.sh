#!/bin/sh
# The application: greets whoever is named (default: world).
echo "Hello, ${1:-world}!"
