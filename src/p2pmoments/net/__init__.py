"""The network shell: sockets, links, discovery."""
