"""What is read and written: data sets (offline first, checksummed), checkpoints (safetensors), the size-capped .npz
reader, run directories. Everything written is written whole (temporary file + rename).

May import: npvae.maths.
"""
