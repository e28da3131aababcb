"""The app instance run by ``faust -A streams.app worker -l info`` (and ``recq worker``).
Settings come from the environment; the broker is RECQ_BOOTSTRAP_SERVERS or the embedded
one started by ``recq kafka start``. Create the topics first: ``recq topics create``."""

from schemas.settings import StreamsSettings, load_settings
from streams.worker import create_app

app = create_app(load_settings(StreamsSettings))
