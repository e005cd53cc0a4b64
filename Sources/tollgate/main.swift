import Tollgate
print("tollgate")
