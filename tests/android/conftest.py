from tests.conftest_models import gemma_model  # noqa: F401
from tests.conftest_virtual import adb_serial, adb_server, virtual_phone, virtual_phone_factory  # noqa: F401
from tests.conftest_models import gemma_model  # noqa: F401
