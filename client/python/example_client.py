#!/usr/bin/env python3
"""A minimal Python client for rwkv-server: create a session, stream a generation.

Needs only Debian's python3-grpcio and python3-protobuf, plus protoc
(protobuf-compiler) to generate the message classes from proto/rwkv/v1/rwkv.proto:

    python3 client/python/example_client.py --server 127.0.0.1:50051 --prompt "Hello"

The message classes are generated into a temporary directory on each run
(or into --gen-dir, kept for the next run). The service stubs are written by
hand below (grpc_tools is not needed): a gRPC method is just a path plus
serialize/deserialize functions.

The generated text goes to stdout exactly as streamed; the session id, the
finish reason and the usage go to stderr.
"""

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO_FILE = "rwkv/v1/rwkv.proto"


def load_messages(protoc, proto_root, gen_dir):
    """Generates rwkv_pb2 with protoc (unless already in gen_dir) and imports it."""
    if gen_dir is None:
        gen_dir = tempfile.mkdtemp(prefix="rwkv_pb2_")
        atexit.register(shutil.rmtree, gen_dir, ignore_errors=True)
    if not os.path.exists(os.path.join(gen_dir, "rwkv", "v1", "rwkv_pb2.py")):
        os.makedirs(gen_dir, exist_ok=True)
        subprocess.run([protoc, "--proto_path=" + proto_root, "--python_out=" + gen_dir, PROTO_FILE], check=True)
    sys.path.insert(0, gen_dir)
    from rwkv.v1 import rwkv_pb2  # pylint: disable=import-outside-toplevel

    return rwkv_pb2


class InferenceStub:
    """Hand-written stubs for the rwkv.v1.Inference methods this example uses."""

    def __init__(self, channel, pb):
        def method(name, request, response, streaming=False):
            factory = channel.unary_stream if streaming else channel.unary_unary
            return factory(
                "/rwkv.v1.Inference/" + name,
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )

        self.CreateSession = method("CreateSession", pb.CreateSessionRequest, pb.Session)
        self.GetSession = method("GetSession", pb.SessionRequest, pb.Session)
        self.Generate = method("Generate", pb.GenerateRequest, pb.GenerateResponse, streaming=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051")
    parser.add_argument("--prompt", default="Hello")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    parser.add_argument("--protoc", default="protoc")
    parser.add_argument("--proto-root", default=DEFAULT_PROTO_ROOT)
    parser.add_argument("--gen-dir", default=None, help="where to generate rwkv_pb2 (default: a temp dir)")
    args = parser.parse_args()

    pb = load_messages(args.protoc, args.proto_root, args.gen_dir)
    with grpc.insecure_channel(args.server) as channel:
        stub = InferenceStub(channel, pb)
        try:
            # 1. A session fed with the prompt: its state now holds the whole context.
            session = stub.CreateSession(pb.CreateSessionRequest(prompt_text=args.prompt), timeout=args.timeout)
            print("session: " + session.id, file=sys.stderr)

            # 2. Continue it: no new prompt, the session's state is the context.
            request = pb.GenerateRequest(
                session_id=session.id,
                max_tokens=args.max_tokens,
                sampling=pb.SamplingParams(temperature=args.temperature, top_p=args.top_p, seed=args.seed),
            )
            last = None
            for chunk in stub.Generate(request, timeout=args.timeout):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                if chunk.finish_reason != pb.FINISH_REASON_UNSPECIFIED:
                    last = chunk
            if last is None:
                print("example_client: the stream ended without a finish reason", file=sys.stderr)
                return 1
            usage = last.usage
            print(
                "\nfinish_reason: %s  prompt_tokens: %d  generated_tokens: %d  total: %.3fs"
                % (pb.FinishReason.Name(last.finish_reason), usage.prompt_tokens, usage.generated_tokens,
                   usage.total_seconds),
                file=sys.stderr,
            )

            # 3. The session remembers everything it has seen.
            after = stub.GetSession(pb.SessionRequest(session_id=session.id), timeout=args.timeout)
            print("tokens_seen: %d" % after.tokens_seen, file=sys.stderr)
        except grpc.RpcError as e:
            print("example_client: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
