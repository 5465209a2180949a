"""A real HTTP server on 127.0.0.1 serving one directory, for the tests."""

import functools
import http.server
import os
import shutil
import threading


class HttpDir:
    """A real HTTP server on 127.0.0.1 serving one directory."""

    def __init__(self, directory):
        self.directory = directory
        handler = functools.partial(_QuietHandler, directory=directory)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, path, name):
        shutil.copyfile(path, os.path.join(self.directory, name))
        return self.url + "/" + name

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
