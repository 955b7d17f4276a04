"""The DMP leg of Y deliveries: the ITI-41 connector and the reference DMP."""
