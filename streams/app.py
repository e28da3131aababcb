"""The app instance run by ``faust -A streams.app worker -l info`` (and ``recq worker``).
Settings come from the environment; the broker is RECQ_BOOTSTRAP_SERVERS or the embedded
one started by ``recq kafka start``. Create the topics first: ``recq topics create``."""

from kafkaio.connection import checked_bootstrap
from schemas.settings import StreamsSettings, load_settings
from streams.worker import create_app

settings = load_settings(StreamsSettings)
# A wrong password or an untrusted CA fails here, naming the setting, not as a crash loop.
app = create_app(settings, bootstrap=checked_bootstrap(settings))
