"""The port proxy: web apps on ports of this machine or of backends' machines, and named apps."""
