"""Print a join token (and playground / meet URLs) to try the worker from any client.

    python -m agent.access_token --room demo --identity alice [--name Alice] [--ttl 3600]
    python -m agent.access_token --room demo --identity alice --token-only   # just the JWT

Reads LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET from the environment or the cwd's
`.env`. With `AGENT_NAME` set (explicit dispatch) the token also asks LiveKit to dispatch that
agent into the room when the participant joins; without it, any worker of this project joins
every new room by itself.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from datetime import timedelta
from urllib.parse import urlencode

from livekit import api

from .settings import WorkerSettings, load_env_file

PLAYGROUND_URL = "https://agents-playground.livekit.io"
MEET_URL = "https://meet.livekit.io/custom"


def make_token(
    settings: WorkerSettings,
    *,
    room: str,
    identity: str,
    name: str | None = None,
    ttl: timedelta = timedelta(hours=1),
) -> str:
    """A JWT that lets `identity` join `room`, publish and subscribe.

    Raises:
        ValueError: LIVEKIT_API_KEY or LIVEKIT_API_SECRET is not set.
    """
    if not settings.livekit_api_key or not settings.livekit_api_secret:
        raise ValueError("set LIVEKIT_API_KEY and LIVEKIT_API_SECRET (see .env.example)")
    token = (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_ttl(ttl)
        .with_grants(
            api.VideoGrants(
                room_join=True,
                room=room,
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
            )
        )
    )
    if settings.agent_name:
        token = token.with_room_config(
            api.RoomConfiguration(
                agents=[api.RoomAgentDispatch(agent_name=settings.agent_name)],
            )
        )
    return token.to_jwt()


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, print the token and URLs; 2 on a configuration error."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.access_token", description="Print a LiveKit join token for a room."
    )
    parser.add_argument("--room", required=True, help="room to join (created on first join)")
    parser.add_argument("--identity", required=True, help="participant identity, e.g. alice")
    parser.add_argument("--name", help="display name (default: the identity)")
    parser.add_argument("--ttl", type=int, default=3600, help="validity in seconds (3600)")
    parser.add_argument("--token-only", action="store_true", help="print only the token")
    args = parser.parse_args(argv)

    load_env_file()
    settings = WorkerSettings.from_env()
    # `livekit-server --dev`'s secret is the 6-byte "secret"; PyJWT warns about it on every token
    warnings.filterwarnings("ignore", message="The HMAC key is")
    try:
        jwt = make_token(
            settings,
            room=args.room,
            identity=args.identity,
            name=args.name,
            ttl=timedelta(seconds=args.ttl),
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.token_only:
        print(jwt)
        return 0
    url = settings.livekit_url or "ws://localhost:7880"
    print(f"LIVEKIT_URL: {url}")
    print(f"room: {args.room}  identity: {args.identity}")
    print(f"token: {jwt}")
    print()
    print(f"playground: {PLAYGROUND_URL}  (Manual connect: paste the URL and the token)")
    print(f"meet:       {MEET_URL}?{urlencode({'liveKitUrl': url, 'token': jwt})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
