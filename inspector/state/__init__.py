"""What outlives a run: the result journal (writer and readers), the image store, the recorder that the
publishing thread writes both through, and the history queries of `inspector history`."""
