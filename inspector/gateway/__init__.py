"""`inspector gateway`: a separate process that subscribes to a station like any client (PUB + backfill)
and serves it to the plant: OPC UA, Modbus TCP, an operator web page with Prometheus metrics, MQTT."""
