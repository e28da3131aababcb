"""recq's command line, the embedded Kafka launcher and the glue that runs the stages."""
